"""uvicorn's WebSocket protocol plus one ASGI extension: write a frame encoded in advance.

An order's event goes to every socket following that order as the same bytes. Through ASGI each
socket would re-frame the text and pass it through three layers of `send`, with a task switch
per socket: ~100 µs of API CPU per message, so a burst to 5,000 sockets took half a second.
With this extension the hub frames each event once and writes it to every idle socket itself,
and a terminal event goes out in one write with the close frame that ends the stream.

The extension (`scope["extensions"][PREPARED_FRAMES]["write"]`) takes a complete frame, and
optionally a close code and reason to follow it. It returns False, writing nothing, whenever
the socket cannot take the frame at once: not open, closing, or its send buffer above the
high-water mark. The caller then uses the ordinary ASGI send, which waits (with its timeout)
for the buffer to drain. Servers without the extension leave it out of the scope and
everything goes through ASGI.
"""

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

PREPARED_FRAMES = "order-engine.prepared-frames"

_TEXT_FIN = 0x81  # FIN + opcode 1 (text); server frames are never masked


def text_frame(payload: bytes) -> bytes:
    """One complete, unmasked WebSocket text frame (RFC 6455 §5.2) holding UTF-8 `payload`."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", _TEXT_FIN, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", _TEXT_FIN, 126, n)
    else:
        head = struct.pack("!BBQ", _TEXT_FIN, 127, n)
    return head + payload


class PreparedFrameProtocol(WebSocketsSansIOProtocol):
    """Pass as uvicorn's `ws`; see the module docstring."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:  # the app's task is created but has not run yet
            scope["extensions"][PREPARED_FRAMES] = {"write": self.write_prepared}

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
