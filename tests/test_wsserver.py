"""The prepared-frame extension (`app.wsserver`) against the uvicorn it is built on: the
behaviour of uvicorn's WebSocket protocol it relies on, pinned through a real server and a real
client, so that an upgrade that changes it fails here rather than in production."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest
import websockets

from app.frames import text_frame
from app.wsserver import PREPARED_FRAMES, SERVER_PROTOCOLS
from tests.conftest import uvicorn_serving
from tests.helpers import until_closed

Handler = Callable[[Any, Any, Callable[..., Awaitable[None]]], Awaitable[None]]
BIG = b'"' + b"x" * 65_534 + b'"'  # one 64 KiB JSON string


def frame(value: object) -> bytes:
    return text_frame(orjson.dumps(value))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve one WebSocket handler with the API's protocols; yields a starter -> its URL."""
    async with AsyncExitStack() as running:

        async def start(handler: Handler) -> str:
            async def app(scope: Any, receive: Any, send: Any) -> None:
                assert scope["type"] == "websocket"
                await handler(scope, receive, send)

            serving = uvicorn_serving(app, lifespan="off", **SERVER_PROTOCOLS)
            port = await running.enter_async_context(serving)
            return f"ws://127.0.0.1:{port}/"

        yield start


async def test_frames_go_out_as_written_and_a_close_ends_the_socket_as_asgi_would(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    seen: list[Any] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        write = scope["extensions"][PREPARED_FRAMES]["write"]
        seen.append(write(frame("early"), None))  # before the handshake: refused
        await send({"type": "websocket.accept"})
        seen.append(write(frame("one") + frame("two"), None))  # several frames, one write
        seen.append(write(frame("three"), (1000, "done")))  # then the closing handshake
        seen.append(write(frame("late"), None))  # closing: refused
        seen.append(await receive())  # the app hears of its own close, as after ASGI's

    url = await serve(handler)
    async with websockets.connect(url) as ws:
        messages = await until_closed(ws, 10)
    assert messages == ["one", "two", "three"]
    assert (ws.close_code, ws.close_reason) == (1000, "done")
    assert seen == [
        False,
        True,
        True,
        False,
        {"type": "websocket.disconnect", "code": 1000, "reason": "done"},
    ]


async def test_a_full_send_buffer_refuses_until_asgi_send_has_drained_it(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """The extension refuses above the transport's high-water mark, and ASGI's `send` (which
    the stream falls back to) waits for the reader and then goes through."""
    outcome: dict[str, Any] = {}
    reading = asyncio.Event()

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        write = scope["extensions"][PREPARED_FRAMES]["write"]
        written = 0
        while written < 10_000 and write(text_frame(BIG), None):  # ~640 MB at most
            written += 1
        outcome["written"] = written
        reading.set()
        await send({"type": "websocket.send", "text": '"after"'})  # waits for the reader
        outcome["after"] = write(frame("end"), (1000, "done"))  # drained: taken again
        await receive()

    url = await serve(handler)
    async with websockets.connect(url, max_size=None) as ws:
        async with asyncio.timeout(10):
            await reading.wait()  # the client reads nothing until the server is refused
        messages = await until_closed(ws, 30)
    assert 0 < outcome["written"] < 10_000, outcome
    assert messages[outcome["written"] :] == ["after", "end"]
    assert outcome["after"] is True and ws.close_code == 1000


async def test_a_gone_client_is_refused(serve: Callable[[Handler], Awaitable[str]]) -> None:
    gone = asyncio.Event()
    after: list[bool] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        write = scope["extensions"][PREPARED_FRAMES]["write"]
        assert (await receive())["type"] == "websocket.disconnect"
        after.append(write(frame("nobody"), None))
        gone.set()

    url = await serve(handler)
    async with websockets.connect(url):
        pass
    async with asyncio.timeout(10):
        await gone.wait()
    assert after == [False]
