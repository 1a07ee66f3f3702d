"""One error shape for every response: `{"error", "code", "details"}`."""

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import EngineError, RateLimited, RiskLimit, ServiceUnavailable, Unauthorized
from shared.models import ErrorBody
from shared.outages import OUTAGE_ERRORS, outage_of

log = logging.getLogger(__name__)

ORDER_SUBMIT_PATH = "/api/orders/execute"  # whose refusals count in `orders_rejected_total`

# The documented error responses of every route (OpenAPI).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}
_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}


def json_response(
    body: object, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


def _render(err: EngineError) -> Response:
    headers = {}
    if isinstance(err, ServiceUnavailable | RateLimited):
        headers["Retry-After"] = str(err.retry_after_s)
    elif isinstance(err, RiskLimit) and err.status_code == 429:
        headers["Retry-After"] = str(err.retry_after_s)
    elif isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return json_response(err.body(), err.status_code, headers)


async def _engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineError)
    _count_rejection(request, exc.code)
    return _render(exc)


def _count_rejection(request: Request, code: str) -> None:
    """`orders_rejected_total{code}` for a refused `POST /api/orders/execute`."""
    if request.method == "POST" and request.url.path == ORDER_SUBMIT_PATH:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.rejected(code)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = [
        {
            "field": ".".join(str(p) for p in e["loc"] if p not in ("query", "path", "header")),
            "message": e["msg"],
        }
        for e in exc.errors()
    ]
    first = details[0] if details else {"field": "request", "message": "invalid"}
    body = {
        "error": f"{first['field']}: {first['message']}",
        "code": "VALIDATION_ERROR",
        "details": details,
    }
    return json_response(body, 400)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "HTTP_ERROR")
    body = {"error": str(exc.detail), "code": code, "details": []}
    return json_response(body, exc.status_code, dict(exc.headers or {}))


async def _dependency_down(request: Request, exc: Exception) -> Response:
    """An outage error a route let through (most calls go through `app.outages` and arrive
    here as `ServiceUnavailable` already)."""
    which = outage_of(exc) or "A dependency"
    log.warning("%s %s: %s unavailable: %r", request.method, request.url.path, which, exc)
    _count_rejection(request, ServiceUnavailable.code)
    return _render(ServiceUnavailable(f"{which} is unavailable; retry shortly", retry_after_s=2))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for exc_type in OUTAGE_ERRORS:
        app.add_exception_handler(exc_type, _dependency_down)
