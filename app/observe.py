"""The request middleware: a request id for every request, and its duration by route.

Pure ASGI (no `BaseHTTPMiddleware`: that would run each request's body in a task of its own
and cost more than the metric). Every HTTP request and WebSocket gets a request id: the
client's `X-Request-ID` when it is short and plain, else a new one; it is returned in the
response's `X-Request-ID`, set in the log context (`shared.logs.REQUEST_ID`) for every line the
request logs, and sent with the order's job so the worker's lines carry it too.

`http_request_duration_seconds` is labelled with the route's template (`/api/orders/{order_id}`,
never the id), `unmatched` for a path no route took; for a WebSocket it is the session's length
and its status is 101. Metrics are read from `app.state.metrics`, set by the lifespan.
"""

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import REQUEST_ID, request_id_from
from shared.metrics import ApiMetrics

HEADER = b"x-request-id"


class RequestMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(_header(scope, HEADER))
        token = REQUEST_ID.set(request_id)
        status = 101 if kind == "websocket" else 500  # a request that never answered: 500
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, raw_id)]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id if kind == "http" else send)
        finally:
            REQUEST_ID.reset(token)
            metrics: ApiMetrics | None = getattr(scope["app"].state, "metrics", None)
            if metrics is not None and metrics.enabled:
                route = scope.get("route")
                metrics.request(
                    getattr(route, "path", "unmatched"),
                    scope.get("method", "WS"),
                    status,
                    time.perf_counter() - started,
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
