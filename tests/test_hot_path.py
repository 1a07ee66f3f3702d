"""`POST /api/orders/execute` and its WebSocket go through FastAPI's own routing, so whatever
guards the other routes guards them too: router-level dependencies (authentication),
`dependency_overrides`, middleware and body limits; and the routes that skip FastAPI's
request handling when there is nothing for it to do (`app.hotpath`) stop skipping it the
moment there is."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from app.hotpath import ConnectionOnlyRoute, add_connection_only_websocket_route
from tests.conftest import Stack, StackFactory, uvicorn_serving
from tests.helpers import follow

EXECUTE = "/api/orders/execute"
ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.5"}
# Not an API key header: the app checks those itself (open mode: any key sent must be valid).
KEY = {"X-Test-Pass": "let-me-in"}


async def require_key(conn: HTTPConnection) -> None:
    """A stand-in for authentication, added to the routers as the app's own would be."""
    if conn.headers.get("x-test-pass") != KEY["X-Test-Pass"]:
        raise HTTPException(401, "missing or unknown key", {"WWW-Authenticate": "Bearer"})


@pytest.fixture
async def guarded(make_stack: StackFactory) -> Stack:
    return await make_stack(api_dependencies=[Depends(require_key)])


async def _refused_socket(url: str) -> int:
    """The HTTP status a WebSocket handshake to `url` was refused with."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    return refused.value.response.status_code


async def test_a_router_dependency_guards_the_post_and_the_socket(
    guarded: Stack, db: asyncpg.Connection
) -> None:
    post = await guarded.http.post(EXECUTE, json=ORDER)
    assert post.status_code == 401, post.text
    assert post.headers["www-authenticate"] == "Bearer"
    assert post.json()["error"] == "missing or unknown key"
    assert await _refused_socket(f"{guarded.ws_base}{EXECUTE}") == 401  # submit
    assert (await guarded.http.get("/api/orders")).status_code == 401  # as every other route
    assert await db.fetchval("SELECT count(*) FROM orders") == 0

    accepted = await guarded.submit(ORDER, **KEY)
    url = f"{guarded.ws_base}{EXECUTE}?orderId={accepted['orderId']}"
    assert await _refused_socket(url) == 401  # follow
    async with websockets.connect(url, additional_headers=KEY) as ws:
        async for _ in ws:
            pass
    assert ws.close_code == 1000, ws.close_reason
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def test_dependency_overrides_reach_the_post_and_the_socket(
    make_stack: StackFactory,
) -> None:
    overridden: list[str] = []

    async def allow(conn: HTTPConnection) -> None:
        overridden.append(conn.scope["type"])

    def serve(app: FastAPI) -> ASGIApp:
        app.dependency_overrides[require_key] = allow
        return app

    stack = await make_stack(api_dependencies=[Depends(require_key)], serve=serve)
    accepted = await stack.submit(ORDER)  # no key: the override stands in for the check
    events = await follow(accepted["wsUrl"])
    assert events[-1]["status"] == "confirmed"
    assert overridden == ["http", "websocket"]


class Recorder:
    """Middleware that notes every request it sees."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            self.seen.append((scope.get("method", "WS"), scope["path"]))
        await self.app(scope, receive, send)


async def test_middleware_sees_the_post_and_the_socket(make_stack: StackFactory) -> None:
    seen: list[tuple[str, str]] = []

    def serve(app: FastAPI) -> ASGIApp:
        app.add_middleware(Recorder, seen=seen)
        return app

    stack = await make_stack(serve=serve)
    accepted = await stack.submit(ORDER)
    await follow(accepted["wsUrl"])
    assert seen == [("POST", EXECUTE), ("WS", EXECUTE)]


async def test_the_apps_body_limit_holds_on_the_post(make_stack: StackFactory) -> None:
    def serve(app: FastAPI) -> ASGIApp:
        app.max_body_size = 40  # FastAPI's own limit, below the order's ~70 bytes
        return app

    stack = await make_stack(workers=0, serve=serve)
    response = await stack.http.post(EXECUTE, json=ORDER)
    assert response.status_code == 413, response.text  # FastAPI's answer, before any handler


async def test_other_methods_on_the_path_are_405(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0)
    for method in ("PUT", "PATCH"):
        response = await stack.http.request(method, EXECUTE, json=ORDER)
        assert response.status_code == 405, response.text
        assert response.json()["code"] == "METHOD_NOT_ALLOWED"


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """`app` on a real port; yields its base URL (http://...)."""
    async with uvicorn_serving(app) as port:
        yield f"http://127.0.0.1:{port}"


async def plain_post(request: Request) -> Response:
    return JSONResponse({"path": request.url.path})


async def plain_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


async def _greeting(url: str, headers: dict[str, str] | None = None) -> str:
    async with websockets.connect(url, additional_headers=headers) as ws:
        return str(await ws.recv())


async def test_routes_with_nothing_to_solve_still_take_a_routers_dependency() -> None:
    """A router that includes a `ConnectionOnlyRoute` with a dependency of its own gets that
    dependency run, as for any FastAPI route: the shortcut is the route's own handler only."""
    router = APIRouter(route_class=ConnectionOnlyRoute)
    router.add_api_route("/post", plain_post, methods=["POST"])
    router.add_api_websocket_route("/socket", plain_socket)
    app = FastAPI()
    app.include_router(router, prefix="/open")
    app.include_router(router, prefix="/guarded", dependencies=[Depends(require_key)])
    async with served(app) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.post("/open/post")).json() == {"path": "/open/post"}
        assert (await http.post("/guarded/post")).status_code == 401
        assert (await http.post("/guarded/post", headers=KEY)).status_code == 200
        ws_base = base.replace("http", "ws", 1)
        assert await _greeting(f"{ws_base}/open/socket") == "hello"
        assert await _refused_socket(f"{ws_base}/guarded/socket") == 401
        assert await _greeting(f"{ws_base}/guarded/socket", KEY) == "hello"


async def test_routes_with_something_to_solve_get_fastapis_handling() -> None:
    """An endpoint with a parameter, or one that returns data rather than a `Response`, or a
    route with a dependency, gets FastAPI's own handler: parameters are validated, data is
    serialized, the dependency runs (and an override replaces it)."""

    async def with_parameter(request: Request, n: int) -> Response:
        return JSONResponse({"n": n})

    async def returns_data(request: Request) -> dict[str, Any]:
        return {"data": True}

    async def socket_with_parameter(websocket: WebSocket, n: int) -> None:
        await websocket.accept()
        await websocket.send_text(f"n={n}")
        await websocket.close()

    app = FastAPI()
    for path, endpoint, dependencies in (
        ("/parameter", with_parameter, []),
        ("/data", returns_data, []),
        ("/guarded", plain_post, [Depends(require_key)]),
    ):
        app.router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            dependencies=dependencies,
            route_class_override=ConnectionOnlyRoute,
        )
    add_connection_only_websocket_route(app, "/socket-parameter", socket_with_parameter, [])
    add_connection_only_websocket_route(
        app, "/socket-guarded", plain_socket, [Depends(require_key)]
    )
    async with served(app) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.post("/parameter?n=3")).json() == {"n": 3}
        assert (await http.post("/parameter?n=x")).status_code == 422
        assert (await http.post("/data")).json() == {"data": True}
        assert (await http.post("/guarded")).status_code == 401
        assert (await http.post("/guarded", headers=KEY)).status_code == 200
        ws_base = base.replace("http", "ws", 1)
        assert await _greeting(f"{ws_base}/socket-parameter?n=4") == "n=4"
        assert await _refused_socket(f"{ws_base}/socket-guarded") == 401
        assert await _greeting(f"{ws_base}/socket-guarded", KEY) == "hello"

        async def allow() -> None:
            pass

        app.dependency_overrides[require_key] = allow
        assert (await http.post("/guarded")).status_code == 200
        assert await _greeting(f"{ws_base}/socket-guarded") == "hello"
