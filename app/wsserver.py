"""uvicorn's HTTP and WebSocket protocols, with one ASGI extension (write a frame encoded in
advance) and without a reference cycle per socket; `SERVER_PROTOCOLS` is how the API runs them.

This is the only module that knows uvicorn's protocol internals; `tests/test_wsserver.py` pins
the behaviour it relies on, and `bench/README.md` what the extension is worth.

An order's event goes to every socket following that order as the same bytes. Through ASGI each
socket would re-frame the text and pass it through three layers of `send`, with a task switch
per socket. With this extension `app.stream` frames each event once (`app.frames`) and writes
it to every idle socket from the hub's call, and a terminal event goes out in one write with
the close frame that ends the stream.

The extension (`scope["extensions"][PREPARED_FRAMES]["write"]`) takes complete frames (one, or
several back to back: a replay goes out in one write), and optionally a close code and reason
to follow them. It returns False, writing nothing, whenever the socket cannot take them at
once: not open, closing, or its send buffer above the high-water mark. The caller then uses
the ordinary ASGI send, which waits (with its timeout) for the buffer to drain. Servers
without the extension leave it out of the scope and everything goes through ASGI.
"""

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

PREPARED_FRAMES = "order-engine.prepared-frames"

# uvicorn and websockets log three INFO lines per socket ("[accepted]", "connection open",
# "connection closed") to `uvicorn.error`; a filter there drops them only after each record
# was built. This child logger refuses them at the level check; warnings and errors still
# reach `uvicorn.error`'s handlers.
_SOCKET_LOG = logging.getLogger("uvicorn.error.sockets")
_SOCKET_LOG.setLevel(logging.WARNING)


class PreparedFrameProtocol(WebSocketsSansIOProtocol):
    """Pass as uvicorn's `ws`; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = self.conn.logger = _SOCKET_LOG

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:  # the app's task is created but has not run yet
            scope["extensions"][PREPARED_FRAMES] = {"write": self.write_prepared}

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # The scope holds `write_prepared`, so protocol -> scope -> method -> protocol is a
        # cycle that only the cyclic collector would free; see `UpgradingHttpProtocol`.
        scope: Any = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(PREPARED_FRAMES, None)

    def write_prepared(self, frame: bytes, close: tuple[int, str] | None = None) -> bool:
        """Write `frame` now and return True, or write nothing and return False. With `close`
        (code, reason) the closing handshake starts in the same write, exactly as when the app
        sends `websocket.close`: the app then receives `websocket.disconnect`."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        if close is None:
            self.transport.write(frame)
            return True
        code, reason = close
        self.conn.send_close(code, reason)
        self.transport.write(frame + b"".join(self.conn.data_to_send()))
        # What uvicorn's own `send` does after writing a close frame.
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)
        return True


class UpgradingHttpProtocol(HttpToolsProtocol):
    """Pass as uvicorn's `http`: uvicorn's httptools protocol, minus one garbage cycle per
    WebSocket.

    The httptools parser holds bound methods of its protocol, a reference cycle that uvicorn
    breaks in `connection_lost`. An upgraded connection hands its transport to the WebSocket
    protocol instead and never gets there, so every socket left the pair for the cyclic
    collector, along with everything it holds (with the cycle above, dozens of objects per
    socket), and at hundreds of sockets a second the API's full collections paused it often.
    Dropping the parser once the upgrade is done (nothing reads it after) lets reference
    counting free the connection at once.
    """

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]


# uvicorn's options for the protocols above, shared by `python -m app` and the tests.
SERVER_PROTOCOLS: dict[str, Any] = {
    "http": UpgradingHttpProtocol,
    "ws": PreparedFrameProtocol,
    # Event messages are small JSON; compressing each one costs more CPU than it saves.
    "ws_per_message_deflate": False,
}
