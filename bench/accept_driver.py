"""Submits `POSTS` market orders through the API's ASGI app in this process, one at a time.

Run by `bench.instructions` under valgrind, with the interpreter and the working directory of
the checkout being measured (so it imports that checkout's `app`), never imported. It uses
only `app.main.create_app` and `shared.settings.Settings`, which every release has, and
talks to the PostgreSQL and Redis named by `DATABASE_URL` and `REDIS_URL`: no uvicorn, no
socket between client and API, so what it counts is the API's own work per order.
"""

import asyncio
import os
import sys
from typing import Any

import uvloop

BODY = b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":"1.5"}'
WARMUP = 50


async def post(app: Any) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/orders/execute",
        "raw_path": b"/api/orders/execute",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost:3000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3000),
        "state": {},
    }
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def main(posts: int) -> None:
    sys.path.insert(0, os.getcwd())
    from app.main import create_app
    from shared.settings import Settings

    app = create_app(Settings())
    async with app.router.lifespan_context(app):
        for _ in range(WARMUP + posts):
            status = await post(app)
            if status != 200:
                raise SystemExit(f"POST answered {status}")


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
