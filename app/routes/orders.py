"""`POST /api/orders/execute`, `GET /api/orders`, `GET /api/orders/{id}`."""

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, params
from fastapi.responses import Response
from starlette.requests import HTTPConnection

from app import service
from app.auth import require
from app.callers import SECURITY, Reader, Trader
from app.deps import EXECUTE_PATH, Res, Resources, ws_base
from app.errors import ERROR_RESPONSES, json_response
from app.hotpath import ConnectionOnlyRoute
from shared.apikeys import Scope
from shared.errors import InvalidJson, InvalidOrder, PayloadTooLarge, UnsupportedMediaType
from shared.grammar import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_PATTERN, order_schema
from shared.models import OrderAccepted, OrderDetail, OrderList, Status, validate_order
from shared.numbers import MAX_DECIMAL_CHARS

router = APIRouter(prefix="/api", tags=["orders"])

MAX_BODY_BYTES = 16 * 1024


def client_key(conn: HTTPConnection) -> str:
    """Who the rate limit counts against: the peer address, which is the client's own when
    the request came through a proxy listed in FORWARDED_ALLOW_IPS."""
    return conn.client.host if conn.client else "unknown"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _number_literal(text: str) -> str:
    # A JSON number is already ASCII digits; only its length needs a bound here (16 KiB of
    # digits is a valid literal). The decimal grammar bounds its exponent where it is read.
    if len(text) > MAX_DECIMAL_CHARS:
        raise InvalidJson(f"a number literal longer than {MAX_DECIMAL_CHARS} characters")
    return text


def _int(text: str) -> int:
    return int(_number_literal(text))


def _float(text: str) -> Decimal:
    return Decimal(_number_literal(text))


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # with duplicates, which one would a reader believe?
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJson(
                    f"duplicate key {key[:64]!r}",
                    [{"field": key[:64], "message": "duplicate key"}],
                )
            seen.add(key)
    return obj


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body keeping every number exact (no floats), refusing NaN/Infinity,
    duplicate keys and number literals too long to be a real amount."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            parse_float=_float,
            parse_int=_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_object,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}"[:200]) from None


def check_json_content_type(request: Request) -> None:
    """415 unless the request says its body is JSON: a missing Content-Type is not JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        shown = repr(ctype[:60]) if ctype else "missing"
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {shown}")


async def read_body(request: Request) -> bytes:
    """The raw body, at most `MAX_BODY_BYTES` (413 past it, without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def read_json_body(request: Request) -> Any:
    check_json_content_type(request)
    return parse_json(await read_body(request))


def idempotency_key(request: Request) -> str | None:
    """The `Idempotency-Key` header, if sent: 1-255 printable ASCII characters. An empty key
    would be one key shared by every client that sends it, so it is refused, not ignored."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY or IDEMPOTENCY_KEY.fullmatch(key) is None:
        problem = (
            f"over {MAX_IDEMPOTENCY_KEY} characters"
            if len(key) > MAX_IDEMPOTENCY_KEY
            else "1 to 255 printable ASCII characters, no surrounding spaces"
        )
        raise InvalidOrder(
            f"Idempotency-Key: {problem}", [{"field": "Idempotency-Key", "message": problem}]
        )
    return key


MAX_IDEMPOTENCY_KEY = 255
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and body returns the original response",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    },
}
# The cursor `nextCursor` returns: the previous page's last (created_at in microseconds since
# the epoch, order id); any string of this shape is a valid cursor.
CURSOR_PATTERN = "^[0-9]{1,16}_[0-9a-f]{32}$"
_LIMIT = "^(?:[1-9][0-9]?|1[0-9]{2}|200)$"  # 1-200 in plain digits (int() reads "1_0", " 5")


async def execute_order(request: Request) -> Response:
    # The busiest route takes only the request: no dependency for FastAPI to solve and no
    # response model to validate on the way out (the body is built by `service`, to the
    # documented OrderAccepted shape, and tested as such).
    res: Resources = request.app.state.resources
    caller = require(await res.auth.from_headers(request), Scope.TRADE)
    key = idempotency_key(request)
    order = validate_order(await read_json_body(request))
    accepted = await service.accept_order(
        res, order, caller, client_key(request), ws_base(request), key
    )
    return json_response(accepted)


def add_execute_route(app: FastAPI, dependencies: Sequence[params.Depends]) -> None:
    """Serve `POST /api/orders/execute` from the app's own router, with `dependencies` (the
    ones `create_app` gives every order route); see `app.main.create_app` for why there."""
    app.router.add_api_route(
        EXECUTE_PATH,
        execute_order,
        methods=["POST"],
        dependencies=list(dependencies),
        route_class_override=ConnectionOnlyRoute,
        tags=["orders"],
        response_model=OrderAccepted,
        responses=ERROR_RESPONSES,
        summary="Submit an order; follow it on the WebSocket at `wsUrl`",
        openapi_extra={
            "security": SECURITY,
            "parameters": [_IDEMPOTENCY_HEADER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": order_schema()}},
            },
        },
    )


@router.get("/orders", response_model=OrderList, responses=ERROR_RESPONSES)
async def list_orders(
    res: Res,
    caller: Reader,
    status: Status | None = None,
    limit: Annotated[str, Query(pattern=_LIMIT, description="1-200")] = "50",
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> dict[str, Any]:
    return await service.list_orders(res.pg_guard, caller.account, status, int(limit), cursor)


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
