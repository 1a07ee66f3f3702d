"""The fast lane (`app.fastlane.EngineApp`) answers exactly as FastAPI's own routing would.

One server, one app: a request carrying `X-Lane: router` is handed to `FastAPI.__call__`, which
takes it through FastAPI's middleware, router and route; any other request reaches the app as
the server would hand it over, so `POST /api/orders/execute` and its WebSocket take the fast
lane. Each case is sent both ways and the answers must match.
"""

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import websockets
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import Stack, StackFactory
from tests.helpers import until_closed

EXECUTE = "/api/orders/execute"
ROUTER = {"X-Lane": "router"}
JSON = {"Content-Type": "application/json"}
ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.5"}
# Fields of an accepted order that differ between any two orders.
PER_ORDER = {"orderId", "wsUrl", "createdAt"}


Seen = list[tuple[str, str]]  # (method, or "WS"; path)


def both_lanes(app: FastAPI, seen: Seen) -> ASGIApp:
    # The app's own middleware (`app.observe`) closes the lane; these tests compare the lane
    # with the router, so they take it out (the request middleware has tests of its own).
    app.user_middleware.clear()
    build = app.build_middleware_stack

    def recording_stack() -> ASGIApp:  # FastAPI builds its stack at the first request
        stack = build()

        async def record(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "lifespan":
                seen.append((scope.get("method", "WS"), scope["path"]))
            await stack(scope, receive, send)

        return record

    app.build_middleware_stack = recording_stack  # type: ignore[method-assign]

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if (b"x-lane", b"router") in scope.get("headers", ()):
            await FastAPI.__call__(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    return serve


@pytest.fixture
def seen() -> Seen:
    return []


@pytest.fixture
async def api(make_stack: StackFactory, seen: Seen) -> Stack:
    return await make_stack(workers=0, serve=lambda app: both_lanes(app, seen))


CASES = [
    pytest.param(orjson.dumps(ORDER), JSON, id="accepted"),
    pytest.param(orjson.dumps({**ORDER, "clientOrderId": "abc"}), JSON, id="client-order-id"),
    pytest.param(b"{", JSON, id="invalid-json"),
    pytest.param(orjson.dumps({**ORDER, "amountIn": "-1"}), JSON, id="negative-amount"),
    pytest.param(orjson.dumps({**ORDER, "tokenOut": "SOL"}), JSON, id="same-token"),
    pytest.param(orjson.dumps(ORDER), {"Content-Type": "text/plain"}, id="not-json"),
    pytest.param(orjson.dumps({**ORDER, "pad": "x" * 17_000}), JSON, id="too-large"),
    pytest.param(orjson.dumps(ORDER), JSON | {"Idempotency-Key": "k" * 300}, id="long-key"),
]


@pytest.mark.parametrize(("body", "headers"), CASES)
async def test_post_answers_as_the_router_does(
    api: Stack, body: bytes, headers: dict[str, str]
) -> None:
    fast = await api.http.post(EXECUTE, content=body, headers=headers)
    routed = await api.http.post(EXECUTE, content=body, headers=headers | ROUTER)
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    # An accepted body's length may differ: `createdAt` drops zero microseconds.
    compared = ("content-type", "retry-after") + (("content-length",) if fast.is_error else ())
    for header in compared:
        assert fast.headers.get(header) == routed.headers.get(header), header
    fast_body, routed_body = fast.json(), routed.json()
    if fast.status_code == 200:
        assert set(fast_body) == set(routed_body)
        assert fast_body["orderId"] != routed_body["orderId"]  # two orders, both accepted
        for body_of in (fast_body, routed_body):
            for key in PER_ORDER:
                body_of.pop(key)
    assert fast_body == routed_body


async def test_both_lanes_accept_orders_that_are_stored(api: Stack) -> None:
    """The fast lane's order is an order like any other: readable, with its `pending` event."""
    fast = (await api.http.post(EXECUTE, json=ORDER)).json()
    routed = (await api.http.post(EXECUTE, json=ORDER, headers=ROUTER)).json()
    for accepted in (fast, routed):
        detail = await api.http.get(f"/api/orders/{accepted['orderId']}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["status"] == "pending"


async def _socket(api: Stack, query: str, headers: dict[str, str]) -> tuple[Any, ...]:
    url = f"{api.ws_base}{EXECUTE}?{query}"
    async with websockets.connect(url, additional_headers=headers) as ws:
        messages = await until_closed(ws, 30)
        return ws.close_code, ws.close_reason, messages


@pytest.mark.parametrize("query", [f"orderId={uuid.uuid4()}", "orderId=not-a-uuid"])
async def test_socket_for_an_unknown_order_closes_as_the_router_does(
    api: Stack, query: str
) -> None:
    fast = await _socket(api, query, {})
    routed = await _socket(api, query, ROUTER)
    assert fast == routed
    assert fast[0] == 4404


async def test_socket_replays_an_order_as_the_router_does(api: Stack) -> None:
    accepted = (await api.http.post(EXECUTE, json=ORDER)).json()
    url = f"{api.ws_base}{EXECUTE}?orderId={accepted['orderId']}"
    for headers in ({}, ROUTER):
        async with websockets.connect(url, additional_headers=headers) as ws:
            first = orjson.loads(await ws.recv())
        assert (first["orderId"], first["seq"], first["status"]) == (
            accepted["orderId"],
            1,
            "pending",
        )


async def test_the_fast_lane_skips_fastapis_layers(api: Stack, seen: Seen) -> None:
    """The point of the lane: its requests never enter FastAPI's middleware stack."""
    accepted = (await api.http.post(EXECUTE, json=ORDER)).json()
    await _socket(api, f"orderId={uuid.uuid4()}", {})
    assert (await api.http.get(f"/api/orders/{accepted['orderId']}")).status_code == 200
    assert seen == [("GET", f"/api/orders/{accepted['orderId']}")]
    await api.http.post(EXECUTE, json=ORDER, headers=ROUTER)
    await _socket(api, f"orderId={uuid.uuid4()}", ROUTER)
    assert seen[1:] == [("POST", EXECUTE), ("WS", EXECUTE)]


class PassThrough:
    """A middleware that does nothing: any middleware at all must close the lane."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _plain_500(_: Request, exc: Exception) -> Response:
    return PlainTextResponse("boom", 500)


# What the lane would not reproduce: each closes it (FastAPI then serves every request).
CLOSERS: dict[str, Callable[[FastAPI], object]] = {
    "added-middleware": lambda app: app.add_middleware(PassThrough),
    "body-size-limit": lambda app: setattr(app, "max_body_size", 1 << 20),
    "catch-all-handler": lambda app: app.add_exception_handler(Exception, _plain_500),
    "status-code-handler": lambda app: app.add_exception_handler(500, _plain_500),
}


@pytest.mark.parametrize("close", CLOSERS.values(), ids=CLOSERS.keys())
async def test_what_the_lane_cannot_reproduce_closes_it(
    make_stack: StackFactory, close: Callable[[FastAPI], object]
) -> None:
    seen: Seen = []

    def serve(app: FastAPI) -> ASGIApp:
        lanes = both_lanes(app, seen)
        close(app)
        return lanes

    api = await make_stack(workers=0, serve=serve)
    assert (await api.http.post(EXECUTE, json=ORDER)).status_code == 200
    await _socket(api, f"orderId={uuid.uuid4()}", {})
    assert seen == [("POST", EXECUTE), ("WS", EXECUTE)]


async def test_other_methods_on_the_path_still_go_through_fastapi(api: Stack) -> None:
    """Only POST takes the fast lane; any other method is FastAPI's to answer."""
    for method in ("PUT", "PATCH"):
        fast = await api.http.request(method, EXECUTE, json=ORDER)
        routed = await api.http.request(method, EXECUTE, json=ORDER, headers=ROUTER)
        assert fast.status_code == routed.status_code == 405, fast.text
        assert fast.json() == routed.json()
        assert fast.json()["code"] == "METHOD_NOT_ALLOWED"


async def test_the_apps_request_middleware_closes_the_lane(
    make_stack: StackFactory, seen: Seen
) -> None:
    """As served (`app.observe.RequestMiddleware` added), both requests go through FastAPI."""

    def serve(app: FastAPI) -> ASGIApp:
        middleware = list(app.user_middleware)
        lanes = both_lanes(app, seen)
        app.user_middleware[:] = middleware
        return lanes

    api = await make_stack(workers=0, serve=serve)
    assert (await api.http.post(EXECUTE, json=ORDER)).status_code == 200
    await _socket(api, f"orderId={uuid.uuid4()}", {})
    assert seen == [("POST", EXECUTE), ("WS", EXECUTE)]
