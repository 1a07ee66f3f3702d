"""A minimal HTTP/1.1 keep-alive client for load generation.

httpx costs several times more CPU per request than the server it measures; on a 2-core machine
that CPU comes out of the server's share. This client does just what the benchmarks need: JSON
requests on a kept-alive connection to uvicorn, which always answers with a Content-Length.
"""

import asyncio
from typing import Any

import orjson


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status, self.body = status, body


class Connection:
    """One kept-alive connection; requests on it are sequential."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """The connection's streams, and whether it was kept alive from an earlier request."""
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            return self._reader, self._writer, False
        return self._reader, self._writer, True

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request and return (status, decoded JSON body or None).

        A kept-alive connection the server closed while idle (uvicorn does after 5 s) fails
        before any byte of a response; the request is then sent once more on a new
        connection, as HTTP clients do.
        """
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        while True:
            reader, writer, reused = await self._open()
            try:
                writer.write(head + payload)
                status, raw = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                self.close()
                nothing_read = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                if reused and nothing_read:
                    continue
                raise
            return status, (orjson.loads(raw) if raw else None)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, (await reader.readexactly(length) if length else b"")


async def get_json(host: str, port: int, path: str, timeout_s: float = 2.0) -> tuple[int, Any]:
    """One request on a fresh connection (health checks and the like)."""
    conn = Connection(host, port)
    try:
        return await asyncio.wait_for(conn.request("GET", path), timeout_s)
    finally:
        conn.close()
