"""What the framework adds to the two requests every order makes, measured in process.

The API app is built as `python -m app` builds it and its lifespan runs against the bench's
servers. Each request is an ASGI call made by this process: once through the app (uvicorn's
part aside: middleware, FastAPI's routing and request handling, exception handling), once by
calling its handler directly on the same resources. Batches of each alternate, and the CPU
time of this process is read around every batch, so PostgreSQL's and Redis's own work is not
in it and the handler's work is the same on both sides: the difference is the framework's.

- `POST /api/orders/execute`: a real market order, accepted (a row in PostgreSQL, a job in
  Redis; no worker runs, nothing executes).
- The WebSocket on the same path, following an order of another account's (an unknown id):
  handshake, Origin and key checks, the ownership lookup in PostgreSQL, close 4404.

Run it with `make bench BENCH_ARGS="--only framework"` (it is part of `make bench-full`).
"""

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Message, Scope
from starlette.websockets import WebSocket

from app.deps import EXECUTE_PATH
from app.main import create_app
from app.routes import orders, ws
from bench.clients import say
from bench.stack import Servers
from shared.settings import Settings

ORDER = b'{"type":"market","tokenIn":"SOL","tokenOut":"USDC","amountIn":"0.01"}'
CLOSE_NOT_FOUND = 4404


@dataclass(frozen=True)
class Config:
    batch: int = 1000  # requests per batch
    rounds: int = 8  # pairs of batches (served, direct) after one to warm up


async def run(servers: Servers, cfg: Config) -> dict[str, Any]:
    await servers.flush_redis()
    database_url = await servers.fresh_database("bench_framework")
    with tempfile.TemporaryDirectory() as data_dir:
        return await measure(database_url, servers.redis_url, data_dir, cfg)


async def measure(database_url: str, redis_url: str, data_dir: str, cfg: Config) -> dict[str, Any]:
    """The comparison on an app built against these servers (every order accepted is kept)."""
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        sim_latency_scale=0,
        sim_tick_ms=0,
        rate_limit_per_s=0,
        max_queue_depth=0,
    )
    app = create_app(settings)
    results: dict[str, Any] = {"batch": cfg.batch, "rounds": cfg.rounds}
    async with app.router.lifespan_context(app):
        for name, one in (("post", _post), ("socket", _socket)):
            results[name] = await _compare(app, one, cfg, name)
    return results


Call = Callable[[FastAPI, bool], Awaitable[None]]


async def _compare(app: FastAPI, one: Call, cfg: Config, name: str) -> dict[str, float]:
    """Median µs of CPU per request served and called directly, and of their difference."""
    served: list[float] = []
    direct: list[float] = []
    for round_ in range(cfg.rounds + 1):
        sides = (False, True) if round_ % 2 else (True, False)
        for via_handler in sides:
            started = time.process_time()
            for _ in range(cfg.batch):
                await one(app, via_handler)
            per_request = (time.process_time() - started) / cfg.batch * 1e6
            if round_:  # the first round warms both paths up
                (direct if via_handler else served).append(per_request)
        if round_:
            say(f"framework: {name} round {round_}/{cfg.rounds}: served {served[-1]:.0f} µs,"
                f" handler alone {direct[-1]:.0f} µs of CPU per request")  # fmt: skip
    out = {
        "served_us": round(statistics.median(served), 1),
        "handler_us": round(statistics.median(direct), 1),
        "framework_us": round(
            statistics.median(s - d for s, d in zip(served, direct, strict=True)), 1
        ),
    }
    say(f"framework: {name}: {out['framework_us']} µs of CPU per request on top of the handler"
        f" ({out['served_us']} served, {out['handler_us']} alone; medians)")  # fmt: skip
    return out


def _scope(app: FastAPI, kind: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": EXECUTE_PATH,
        "raw_path": EXECUTE_PATH.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:3000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3000),
        "app": app,
        "state": {},
        "extensions": {},
    }


async def _post(app: FastAPI, via_handler: bool) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ORDER))]
    scope = _scope(app, "http", b"", headers)
    scope["method"] = "POST"
    sent: list[Message] = []
    incoming = [{"type": "http.request", "body": ORDER, "more_body": False}]

    async def receive() -> Message:
        if incoming:
            return incoming.pop()
        await asyncio.Future()  # a client that sent everything and waits: never returns
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    if via_handler:
        response = await orders.execute_order(Request(scope, receive))
        await response(scope, receive, send)
    else:
        await app(scope, receive, send)
    if sent[0].get("status") != 200:
        raise RuntimeError(f"POST answered {sent}")


async def _socket(app: FastAPI, via_handler: bool) -> None:
    scope = _scope(app, "websocket", f"orderId={uuid.uuid4()}".encode(), [])
    scope["subprotocols"] = []
    sent: list[Message] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> Message:
        if incoming:
            return incoming.pop()
        await asyncio.Future()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    if via_handler:
        await ws.order_socket(WebSocket(scope, receive, send))
    else:
        await app(scope, receive, send)
    if sent[-1].get("code") != CLOSE_NOT_FOUND:
        raise RuntimeError(f"the socket ended with {sent[-1]}")
