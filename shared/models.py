"""Request and response schemas (camelCase on the wire, snake_case in Python)."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from pydantic.alias_generators import to_camel
from solders.pubkey import Pubkey

from shared.errors import InvalidJson, InvalidOrder
from shared.market.tokens import (
    Token,
    is_listed_pair,
    resolve_token,
    to_base_units,
    unlisted_token,
)
from shared.numbers import dec_str

OrderType = Literal["market", "limit", "sniper"]
TERMINAL_STATUSES = ("confirmed", "failed", "cancelled", "expired")
U64_MAX = 2**64 - 1
MAX_AMOUNT_HUMAN = Decimal(10) ** 12
MAX_EXPIRY_S = 30 * 24 * 3600


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class OrderCreate(CamelModel):
    """The body of `POST /api/orders/execute` (and the first WebSocket message)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=True
    )

    type: OrderType = "market"
    token_in: StrictStr = Field(min_length=1, max_length=64, description="symbol or base58 mint")
    token_out: StrictStr = Field(min_length=1, max_length=64, description="symbol or base58 mint")
    amount_in: Decimal = Field(
        gt=0, allow_inf_nan=False, description="human units of tokenIn, number or decimal string"
    )
    slippage_bps: StrictInt = Field(50, ge=1, le=5000)
    limit_price: Decimal | None = Field(
        None, gt=0, allow_inf_nan=False, description="limit orders: minimum tokenOut per tokenIn"
    )
    max_price: Decimal | None = Field(
        None, gt=0, allow_inf_nan=False, description="sniper orders: at most tokenIn per tokenOut"
    )
    expires_in_seconds: StrictInt | None = Field(None, ge=1, le=MAX_EXPIRY_S)
    client_order_id: StrictStr | None = Field(None, max_length=64)


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A validated order, ready to be stored."""

    type: OrderType
    token_in: Token
    token_out: Token
    amount_in: int  # base units of token_in
    slippage_bps: int
    limit_price: Decimal | None
    max_price: Decimal | None
    expires_in_s: int | None
    client_order_id: str | None
    payload: dict[str, Any]  # the normalised request, as stored and hashed for idempotency

    def waiting_for(self) -> str:
        """What a waiting (limit or sniper) order waits for, in words."""
        pair = f"{self.token_out.symbol} per {self.token_in.symbol}"
        if self.type == "limit":
            assert self.limit_price is not None  # validate_order requires one
            return f"best net price for the full size to reach {dec_str(self.limit_price)} {pair}"
        return f"launch of {self.token_out.mint}"


def _detail(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _pydantic_details(err: ValidationError) -> list[dict[str, str]]:
    details = []
    for e in err.errors(include_url=False):
        field = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        details.append(_detail(field, msg))
    return details


def _resolve(field: str, value: str) -> Token:
    token = resolve_token(value)
    if token is None:
        raise InvalidOrder(f"{field}: unknown token {value!r}", [_detail(field, "unknown token")])
    return token


def _sniper_target(value: str) -> Token:
    """A sniper's tokenOut: the mint of a token that does not trade yet."""
    if resolve_token(value) is not None:
        raise InvalidOrder(
            "tokenOut: sniper orders target a token that has not launched yet",
            [_detail("tokenOut", "already trading; use a market or limit order")],
        )
    try:
        Pubkey.from_string(value)
    except ValueError:
        raise InvalidOrder(
            "tokenOut: expected the base58 mint of the token to snipe",
            [_detail("tokenOut", "not a base58 mint address")],
        ) from None
    return unlisted_token(value)


def validate_order(body: Any) -> NewOrder:
    """Turn a decoded JSON body into a `NewOrder`, or raise `InvalidOrder` saying what is wrong."""
    if not isinstance(body, dict):
        raise InvalidJson("order must be a JSON object", [_detail("body", "expected an object")])
    try:
        req = OrderCreate.model_validate(body)
    except ValidationError as err:
        details = _pydantic_details(err)
        first = details[0]
        raise InvalidOrder(f"{first['field']}: {first['message']}", details) from None
    token_in = _resolve("tokenIn", req.token_in)
    token_out = (
        _sniper_target(req.token_out)
        if req.type == "sniper"
        else _resolve("tokenOut", req.token_out)
    )
    if token_in.mint == token_out.mint:
        raise InvalidOrder(
            "tokenIn and tokenOut must differ", [_detail("tokenOut", "same token as tokenIn")]
        )
    if req.type != "sniper" and not is_listed_pair(token_in, token_out):
        raise InvalidOrder(
            f"no pool trades {token_in.symbol}/{token_out.symbol}",
            [_detail("tokenOut", f"not traded against {token_in.symbol}")],
        )
    amount = _amount_base_units(token_in, req.amount_in)
    if req.type == "limit" and req.limit_price is None:
        raise InvalidOrder(
            "limitPrice is required for limit orders", [_detail("limitPrice", "required")]
        )
    if req.type != "limit" and req.limit_price is not None:
        raise InvalidOrder(
            "limitPrice applies to limit orders only", [_detail("limitPrice", "not allowed")]
        )
    if req.type != "sniper" and req.max_price is not None:
        raise InvalidOrder(
            "maxPrice applies to sniper orders only", [_detail("maxPrice", "not allowed")]
        )
    if req.type == "market" and req.expires_in_seconds is not None:
        raise InvalidOrder(
            "expiresInSeconds applies to limit and sniper orders only",
            [_detail("expiresInSeconds", "not allowed")],
        )
    payload: dict[str, Any] = {
        "type": req.type,
        "tokenIn": token_in.symbol,
        "tokenOut": token_out.symbol if req.type != "sniper" else token_out.mint,
        "amountIn": str(req.amount_in.normalize())
        if req.amount_in % 1
        else str(int(req.amount_in)),
        "slippageBps": req.slippage_bps,
    }
    if req.limit_price is not None:
        payload["limitPrice"] = str(req.limit_price)
    if req.max_price is not None:
        payload["maxPrice"] = str(req.max_price)
    if req.expires_in_seconds is not None:
        payload["expiresInSeconds"] = req.expires_in_seconds
    if req.client_order_id is not None:
        payload["clientOrderId"] = req.client_order_id
    return NewOrder(
        type=req.type,
        token_in=token_in,
        token_out=token_out,
        amount_in=amount,
        slippage_bps=req.slippage_bps,
        limit_price=req.limit_price,
        max_price=req.max_price,
        expires_in_s=req.expires_in_seconds,
        client_order_id=req.client_order_id,
        payload=payload,
    )


def _amount_base_units(token: Token, amount: Decimal) -> int:
    if amount > MAX_AMOUNT_HUMAN:
        raise InvalidOrder(
            f"amountIn: at most {MAX_AMOUNT_HUMAN:,} {token.symbol}",
            [_detail("amountIn", "too large")],
        )
    try:
        base = to_base_units(token, amount)
    except ValueError:
        raise InvalidOrder(
            f"amountIn: {token.symbol} has at most {token.decimals} decimals",
            [_detail("amountIn", f"at most {token.decimals} decimal places")],
        ) from None
    if base <= 0 or base > U64_MAX:
        raise InvalidOrder("amountIn: out of range", [_detail("amountIn", "out of range")])
    return base


class OrderAccepted(CamelModel):
    order_id: str
    account: str
    status: str
    type: OrderType
    ws_url: str
    client_order_id: str | None = None
    created_at: datetime


class OrderPublic(CamelModel):
    order_id: str
    account: str
    type: OrderType
    status: str
    token_in: str
    token_out: str
    amount_in: str
    slippage_bps: int
    client_order_id: str | None = None
    dex_chosen: str | None = None
    pool: str | None = None
    quote_price: str | None = None
    executed_price: str | None = None
    amount_out: str | None = None
    fee_amount: str | None = None
    min_amount_out: str | None = None
    tx_hash: str | None = None
    slot: int | None = None
    attempts: int
    last_error: str | None = None
    error_code: str | None = None
    limit_price: str | None = None
    expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class OrderDetail(OrderPublic):
    signer: str | None = None
    signed_transaction: str | None = Field(None, description="base64 of the signed transaction")
    events: list[dict[str, Any]]


class OrderList(CamelModel):
    orders: list[OrderPublic]
    count: int
    next_cursor: str | None = None


class StatsFigures(CamelModel):
    active_orders: int
    queued_jobs: int
    completed_jobs: int
    failed_jobs: int
    total_orders: int
    by_status: dict[str, int]
    by_venue: dict[str, int]


class Stats(StatsFigures):
    """The caller's account's figures; with an `admin` key, the engine's under `global`."""

    account: str
    global_: StatsFigures | None = Field(None, alias="global")


class ErrorBody(BaseModel):
    error: str
    code: str
    details: list[Any] = []
