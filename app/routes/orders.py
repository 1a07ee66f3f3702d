"""`POST /api/orders/execute`, `GET /api/orders`, `GET /api/orders/{id}`."""

import json
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.requests import HTTPConnection

from app import service
from app.auth import require
from app.callers import SECURITY, Reader, Trader
from app.deps import Res, Resources, ws_base
from app.errors import ERROR_RESPONSES, json_response
from shared.apikeys import Scope
from shared.errors import InvalidJson, InvalidOrder, PayloadTooLarge, UnsupportedMediaType
from shared.models import (
    OrderAccepted,
    OrderCreate,
    OrderDetail,
    OrderList,
    validate_order,
)

router = APIRouter(prefix="/api", tags=["orders"])

MAX_BODY_BYTES = 16 * 1024
StatusFilter = Literal[
    "pending", "routing", "building", "submitted", "confirmed", "failed", "cancelled", "expired"
]


def client_key(conn: HTTPConnection) -> str:
    """Who the rate limit counts against: the peer address (the proxy's, behind one)."""
    return conn.client.host if conn.client else "unknown"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body keeping every number exact (no floats) and refusing NaN/Infinity."""
    try:
        return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}"[:200]) from None


async def read_json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {ctype[:60]!r}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    return parse_json(bytes(body))


MAX_IDEMPOTENCY_KEY = 255
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and body returns the original response",
    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
}


@router.post(
    "/orders/execute",
    response_model=OrderAccepted,
    responses=ERROR_RESPONSES,
    summary="Submit an order; follow it on the WebSocket at `wsUrl`",
    openapi_extra={
        "security": SECURITY,
        "parameters": [_IDEMPOTENCY_HEADER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": OrderCreate.model_json_schema(by_alias=True)}
            },
        },
    },
)
async def execute_order(request: Request) -> Response:
    # The busiest route takes only the request: no dependency for FastAPI to solve and no
    # response model to validate on the way out (the body is built by `service`, to the
    # documented OrderAccepted shape, and tested as such), ~5 % of the API's CPU per order.
    res: Resources = request.app.state.resources
    # Checked here, not as a dependency: the fast lane (`app.fastlane`) skips dependencies.
    caller = require(await res.auth.from_headers(request), Scope.TRADE)
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidOrder(
            f"Idempotency-Key: at most {MAX_IDEMPOTENCY_KEY} characters",
            [{"field": "Idempotency-Key", "message": f"over {MAX_IDEMPOTENCY_KEY} characters"}],
        )
    order = validate_order(await read_json_body(request))
    accepted = await service.accept_order(
        res, order, caller, client_key(request), ws_base(request), key
    )
    return json_response(accepted)


@router.get("/orders", response_model=OrderList, responses=ERROR_RESPONSES)
async def list_orders(
    res: Res,
    caller: Reader,
    status: StatusFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    return await service.list_orders(res.pg_guard, caller.account, status, limit, cursor)


@router.get("/orders/{order_id}", response_model=OrderDetail, responses=ERROR_RESPONSES)
async def get_order(order_id: str, res: Res, caller: Reader) -> dict[str, Any]:
    return await service.get_order(res.pg_guard, order_id, res.signer, caller.account)


@router.delete(
    "/orders/{order_id}",
    response_model=OrderDetail,
    responses=ERROR_RESPONSES,
    summary="Cancel a waiting limit or sniper order",
)
@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderDetail,
    responses=ERROR_RESPONSES,
    summary="Cancel a waiting limit or sniper order (same as DELETE)",
)
async def cancel_order(order_id: str, res: Res, caller: Trader) -> dict[str, Any]:
    return await service.cancel_order(res, order_id, caller.account)
