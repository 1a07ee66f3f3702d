"""Request and response schemas (camelCase on the wire, snake_case in Python)."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from solders.pubkey import Pubkey

from shared.errors import InvalidJson, InvalidOrder
from shared.grammar import (
    CONTROL_CHARS,
    MAX_EXPIRY_S,
    MAX_PRICE_DIGITS,
    MAX_PRICE_PLACES,
    MAX_TEXT,
    U64_MAX,
)
from shared.market.router import MAX_HOPS, MAX_SPLITS, RouteOptions
from shared.market.tokens import (
    RESERVED_ADDRESSES,
    Token,
    resolve_token,
    to_base_units,
    unlisted_token,
)
from shared.numbers import dec_str, decimal_places, parse_decimal
from shared.routewire import VENUES, check_route, payload_options, route_options

OrderType = Literal["market", "limit", "sniper"]
Venue = Literal["raydium", "meteora"]  # shared.routewire.VENUES


class Status(StrEnum):
    """An order's status: the one place the vocabulary is spelled (migrations aside)."""

    PENDING = "pending"
    ROUTING = "routing"
    BUILDING = "building"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# Plain strings: they go to SQL as text[] and are compared with statuses read from rows.
TERMINAL_STATUSES: tuple[str, ...] = tuple(
    s.value for s in (Status.CONFIRMED, Status.FAILED, Status.CANCELLED, Status.EXPIRED)
)
OPEN_STATUSES: tuple[str, ...] = tuple(s.value for s in Status if s not in TERMINAL_STATUSES)
MAX_AMOUNT_HUMAN = Decimal(10) ** 12
MAX_PRICE = Decimal(10) ** MAX_PRICE_DIGITS


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def no_control_chars(value: str) -> str:
    """Refuse NUL, control characters and lone surrogates (a UTF-8 column cannot store them)."""
    found = CONTROL_CHARS.search(value)
    if found is not None:
        raise ValueError(f"control character U+{ord(found.group()):04X} not allowed")
    return value


def positive_decimal(value: object) -> Decimal:
    """A decimal in the wire grammar (`shared.numbers`), greater than zero."""
    number = parse_decimal(value)
    if not number:
        raise ValueError("must be greater than 0")
    return number


def price(value: object) -> Decimal | None:
    """A price: > 0, below 10**15, at most 18 decimal places (or None: not given)."""
    if value is None:
        return None
    number = positive_decimal(value)
    if number >= MAX_PRICE:
        raise ValueError(f"must be below {MAX_PRICE:,}")
    if decimal_places(number) > MAX_PRICE_PLACES:
        raise ValueError(f"at most {MAX_PRICE_PLACES} decimal places")
    return number


def integral(value: object) -> object:
    """A JSON number with a zero fraction (`60.0`, `6e1`) is an integer, as JSON Schema says;
    anything else goes on to the strict integer check unchanged (and `60.5` fails it)."""
    if isinstance(value, Decimal):
        try:
            number = parse_decimal(value)
        except ValueError:
            return value
        if number == number.to_integral_value():
            return int(number)
    return value


Text = Annotated[StrictStr, AfterValidator(no_control_chars)]
JsonInt = Annotated[StrictInt, BeforeValidator(integral)]
Amount = Annotated[Decimal, PlainValidator(positive_decimal), WithJsonSchema({})]
Price = Annotated[Decimal | None, PlainValidator(price), WithJsonSchema({})]


class OrderCreate(CamelModel):
    """The body of `POST /api/orders/execute` (and the first WebSocket message). Its OpenAPI
    schema is `shared.grammar.order_schema()`, written from the same bounds."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    type: OrderType = "market"
    token_in: Text = Field(min_length=1, max_length=MAX_TEXT, description="symbol or mint")
    token_out: Text = Field(min_length=1, max_length=MAX_TEXT, description="symbol or mint")
    amount_in: Amount | None = Field(None, description="human units of tokenIn to spend")
    amount_out: Amount | None = Field(None, description="market orders: tokenOut to receive")
    slippage_bps: JsonInt = Field(50, ge=1, le=5000)
    limit_price: Price = Field(None, description="limit orders: minimum tokenOut per tokenIn")
    max_price: Price = Field(None, description="sniper orders: at most tokenIn per tokenOut")
    expires_in_seconds: JsonInt | None = Field(None, ge=1, le=MAX_EXPIRY_S)
    client_order_id: Text | None = Field(None, max_length=MAX_TEXT)
    only_direct_routes: StrictBool = False
    dexes: list[Venue] | None = Field(None, min_length=1, max_length=len(VENUES))
    exclude_dexes: list[Venue] | None = Field(None, max_length=len(VENUES) - 1)
    max_hops: JsonInt = Field(MAX_HOPS, ge=0, le=MAX_HOPS)
    max_splits: JsonInt = Field(MAX_SPLITS, ge=1, le=MAX_SPLITS)


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A validated order, ready to be stored."""

    type: OrderType
    token_in: Token
    token_out: Token
    amount_in: int | None  # base units of token_in; None for exact-out
    amount_out: int | None  # exact-out: base units of token_out to receive
    slippage_bps: int
    limit_price: Decimal | None
    max_price: Decimal | None
    expires_in_s: int | None
    client_order_id: str | None
    payload: dict[str, Any]  # the normalised request, as stored and hashed for idempotency
    route: RouteOptions = field(default_factory=RouteOptions)

    def waiting_for(self) -> str:
        """What a waiting (limit or sniper) order waits for, in words."""
        pair = f"{self.token_out.symbol} per {self.token_in.symbol}"
        if self.type == "limit":
            assert self.limit_price is not None  # validate_order requires one
            return f"best net price for the full size to reach {dec_str(self.limit_price)} {pair}"
        return f"launch of {self.token_out.mint}"


def _detail(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def pydantic_details(err: ValidationError) -> list[dict[str, str]]:
    details = []
    for e in err.errors(include_url=False):
        field = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"].removeprefix("Value error, ")
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
    if value in RESERVED_ADDRESSES:
        raise InvalidOrder(
            "tokenOut: a program's address is never a token's mint",
            [_detail("tokenOut", "a program's address, not a mint")],
        )
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
        details = pydantic_details(err)
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
    _check_types(req)
    amount_in, amount_out = _amounts(req, token_in, token_out)
    options = route_options(
        req.only_direct_routes, req.dexes, req.exclude_dexes, req.max_hops, req.max_splits
    )
    check_route(token_in, token_out, options, amount_out is not None, req.type == "sniper")
    payload: dict[str, Any] = {
        "type": req.type,
        "tokenIn": token_in.symbol,
        "tokenOut": token_out.symbol if req.type != "sniper" else token_out.mint,
    }
    if req.amount_in is not None:
        payload["amountIn"] = _plain(req.amount_in)
    if req.amount_out is not None:
        payload["amountOut"] = _plain(req.amount_out)
    payload["slippageBps"] = req.slippage_bps
    if req.limit_price is not None:
        payload["limitPrice"] = str(req.limit_price)
    if req.max_price is not None:
        payload["maxPrice"] = str(req.max_price)
    if req.expires_in_seconds is not None:
        payload["expiresInSeconds"] = req.expires_in_seconds
    if req.client_order_id is not None:
        payload["clientOrderId"] = req.client_order_id
    payload |= payload_options(options, req.dexes)
    return NewOrder(
        type=req.type,
        token_in=token_in,
        token_out=token_out,
        amount_in=amount_in,
        amount_out=amount_out,
        slippage_bps=req.slippage_bps,
        limit_price=req.limit_price,
        max_price=req.max_price,
        expires_in_s=req.expires_in_seconds,
        client_order_id=req.client_order_id,
        payload=payload,
        route=options,
    )


def _plain(amount: Decimal) -> str:
    return str(amount.normalize()) if amount % 1 else str(int(amount))


def _check_types(req: OrderCreate) -> None:
    """Refuse fields that do not apply to the order's type."""
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
    if req.type != "market" and req.amount_out is not None:
        raise InvalidOrder(
            "amountOut (exact-out) applies to market orders only",
            [_detail("amountOut", "not allowed")],
        )


def _amounts(req: OrderCreate, token_in: Token, token_out: Token) -> tuple[int | None, int | None]:
    """(amount_in, amount_out) in base units: exactly one of the two is given."""
    if req.amount_in is not None and req.amount_out is not None:
        raise InvalidOrder(
            "give amountIn or amountOut, not both", [_detail("amountOut", "not with amountIn")]
        )
    if req.amount_out is not None:
        return None, _amount_base_units(token_out, req.amount_out, "amountOut")
    if req.amount_in is None:
        raise InvalidOrder(
            "amountIn: Field required", [_detail("amountIn", "Field required (or amountOut)")]
        )
    return _amount_base_units(token_in, req.amount_in, "amountIn"), None


def _amount_base_units(token: Token, amount: Decimal, field: str) -> int:
    if amount > MAX_AMOUNT_HUMAN:
        raise InvalidOrder(
            f"{field}: at most {MAX_AMOUNT_HUMAN:,} {token.symbol}",
            [_detail(field, "too large")],
        )
    try:
        base = to_base_units(token, amount)
    except ValueError:
        raise InvalidOrder(
            f"{field}: {token.symbol} has at most {token.decimals} decimals",
            [_detail(field, f"at most {token.decimals} decimal places")],
        ) from None
    if base <= 0 or base > U64_MAX:
        raise InvalidOrder(f"{field}: out of range", [_detail(field, "out of range")])
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
    amount_in: str | None = Field(description="what the order spends (exact-out: once filled)")
    exact_amount_out: str | None = Field(None, description="exact-out orders: tokenOut wanted")
    swap_mode: Literal["ExactIn", "ExactOut"] = "ExactIn"
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
