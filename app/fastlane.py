"""The application class: FastAPI, with the two busiest requests sent straight to their handlers.

Every order brings one `POST /api/orders/execute` and one WebSocket on the same path. Through
FastAPI each passes seven ASGI layers before its handler (server errors, exception telemetry,
the body limit, the exception middleware, the exit stack, the router, the route) and the
WebSocket also has its dependencies solved: a profile of the API at 500 POSTs/s put ~15 % of its
busy time in FastAPI's and Starlette's own frames. `EngineApp` hands exactly these two requests
to their handlers itself, and everything else (including the lifespan) to FastAPI. The routes
stay registered with FastAPI, so OpenAPI documents them and nothing else changes.

What the skipped layers did for these two requests is done here: errors are rendered by the
app's own exception handlers (`app.errors`), looked up the way Starlette looks them up, and an
error no handler takes propagates to the server, which logs it and answers 500 (HTTP) or drops
the connection (WebSocket), as it does behind FastAPI. The handlers take only the request (no
dependencies, no response model) and read `request.app`, set here. Whatever the lane would
not reproduce closes it, and FastAPI then serves these requests too: middleware added to the
app, a root path, FastAPI's body-size limit or its OpenTelemetry instrumentation, and a
catch-all error handler (for `Exception` or a status code), which Starlette renders and then
re-raises.
"""

import inspect
from collections.abc import Awaitable, Callable
from typing import cast

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.routes.orders import execute_order
from app.routes.ws import order_socket

HOT_PATH = "/api/orders/execute"
Handler = Callable[[Request, Exception], Response | Awaitable[Response]]
SyncHandler = Callable[[Request, Exception], Response]


class EngineApp(FastAPI):
    """Pass-through to FastAPI but for `POST` and the WebSocket on `HOT_PATH` (module doc)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("path") == HOT_PATH and self._lane_open(scope):
            if scope["type"] == "http" and scope["method"] == "POST":
                await self._post(scope, receive, send)
                return
            if scope["type"] == "websocket":
                scope["app"] = self
                await order_socket(WebSocket(scope, receive, send))
                return
        await super().__call__(scope, receive, send)

    def _lane_open(self, scope: Scope) -> bool:
        """False whenever FastAPI would do more for these requests than the lane does."""
        telemetry = getattr(self, "_native_telemetry", None)  # FastAPI 0.165's OpenTelemetry
        return not (
            self.user_middleware
            or self.root_path
            or scope.get("root_path")
            or getattr(self, "max_body_size", None) is not None
            or (telemetry is not None and telemetry.enabled())
            or any(k is Exception or isinstance(k, int) for k in self.exception_handlers)
        )

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await execute_order(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:  # as Starlette does with a plain function
                response = await run_in_threadpool(cast(SyncHandler, handler), request, exc)
            exc.__traceback__ = None  # as Starlette does: the instance may be reused
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        """The app's exception handler for `exc`: the nearest class in its MRO, as Starlette."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None
