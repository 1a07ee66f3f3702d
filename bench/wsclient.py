"""A minimal WebSocket client (RFC 6455) for load generation: text frames in, close handshake.

The `websockets` client costs ~45 µs of CPU per received message (its parser, a queue and a
task switch per message); 5,000 subscribers on the same 2 cores as the API then measure the
clients as much as the server. This one parses frames in the protocol callback and hands each
payload to a function, with the time its bytes were read. It does what the benchmarks need:
a handshake, unfragmented or fragmented text/binary frames, ping → pong, and the closing
handshake. Frames it sends are masked, as a client's must be.
"""

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

OnMessage = Callable[[bytes, float], None]  # (payload, receipt time.time())

_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA


class WsClient(asyncio.Protocol):
    """One client socket. `opened` resolves once the server accepts (its time in `opened_at`);
    `closed` resolves to the close code (1006 when the connection dropped without one)."""

    def __init__(self, host: str, port: int, path: str, on_message: OnMessage) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.opened_at = 0.0
        self.close_reason = ""
        self._host, self._port, self._path, self._on_message = host, port, path, on_message
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._parts: list[bytes] = []  # a fragmented message so far

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            "Upgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    async def open(self, timeout_s: float = 60) -> None:
        """Connect; returns once the server has accepted."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            await loop.create_connection(lambda: self, self._host, self._port)
            await self.opened

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self._buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                self._abort()
                return
            self.opened_at = now
            self.opened.set_result(None)
        while len(buf) >= 2:
            head, size = buf[0], buf[1] & 0x7F
            start = 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, start = struct.unpack_from("!H", buf, 2)[0], 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, start = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < start + size:
                return
            payload = bytes(buf[start : start + size])
            del buf[: start + size]
            self._frame(head & 0x80, head & 0x0F, payload, now)

    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode == _CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode(errors="replace")
            self._send(_CLOSE, payload[:2])
            # The server closes the TCP connection now (RFC 6455 §7.1.1: so that the server,
            # not the client, holds TIME_WAIT; thousands of client-side TIME_WAITs make every
            # later connect() on this machine slower).
            if not self.closed.done():
                self.closed.set_result(code)
        elif opcode == _PING:
            self._send(_PONG, payload)
        elif opcode == _PONG:
            pass
        elif not fin:
            self._parts.append(payload)
        elif self._parts:  # the final continuation frame
            self._parts.append(payload)
            message, self._parts = b"".join(self._parts), []
            self._on_message(message, now)
        else:
            self._on_message(payload, now)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._transport.write(
            struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked
        )

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake (the server answers, then `closed` resolves)."""
        self._send(_CLOSE, struct.pack("!H", code))

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(1006)


def for_url(url: str, on_message: OnMessage) -> WsClient:
    """A client for a `ws://` URL, not yet connected (so `on_message` may refer to it)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return WsClient(parts.hostname or "localhost", parts.port or 80, path, on_message)
