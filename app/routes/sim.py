"""Simulation controls (not part of a real exchange API): token launches for snipers."""

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field, PlainValidator, ValidationError, WithJsonSchema
from solders.pubkey import Pubkey

from app.callers import needs
from app.deps import Res
from app.errors import ERROR_RESPONSES
from app.routes.orders import check_json_content_type, parse_json, read_body
from shared import triggers
from shared.apikeys import Scope
from shared.errors import Conflict, InvalidJson, InvalidOrder
from shared.grammar import (
    LAUNCH_LIQUIDITY_DIGITS,
    LAUNCH_LIQUIDITY_PLACES,
    LAUNCH_PRICE_DIGITS,
    LAUNCH_PRICE_MIN_PLACES,
    LAUNCH_PRICE_PLACES,
    MAX_LAUNCH_SYMBOL,
    launch_schema,
)
from shared.market.tokens import RESERVED_ADDRESSES, resolve_token
from shared.models import CamelModel, Text, positive_decimal, pydantic_details
from shared.numbers import dec_str, decimal_places
from shared.sim import launches

# Every simulation control needs `admin` (anonymous callers may use them in AUTH_MODE=open).
router = APIRouter(
    prefix="/api/sim", tags=["simulation"], dependencies=[Depends(needs(Scope.ADMIN, sim=True))]
)


def _bounded(value: object, places: int, at_least: Decimal, below: Decimal) -> Decimal:
    number = positive_decimal(value)
    if not at_least <= number < below:
        raise ValueError(f"must be from {dec_str(at_least)} to below {dec_str(below)}")
    if decimal_places(number) > places:
        raise ValueError(f"at most {places} decimal places")
    return number


def _price_sol(value: object) -> Decimal:
    return _bounded(
        value,
        LAUNCH_PRICE_PLACES,
        Decimal(10) ** -LAUNCH_PRICE_MIN_PLACES,
        Decimal(10) ** LAUNCH_PRICE_DIGITS,
    )


def _liquidity_sol(value: object) -> Decimal:
    return _bounded(
        value,
        LAUNCH_LIQUIDITY_PLACES,
        Decimal(10) ** -LAUNCH_LIQUIDITY_PLACES,
        Decimal(10) ** LAUNCH_LIQUIDITY_DIGITS,
    )


PriceSol = Annotated[Decimal, PlainValidator(_price_sol), WithJsonSchema({})]
LiquiditySol = Annotated[Decimal, PlainValidator(_liquidity_sol), WithJsonSchema({})]


class LaunchCreate(CamelModel):
    """The body of `POST /api/sim/launches` (its OpenAPI schema: `grammar.launch_schema`)."""

    model_config = CamelModel.model_config | {"extra": "forbid"}

    mint: Text | None = Field(None, max_length=64)
    symbol: Text | None = Field(None, min_length=1, max_length=MAX_LAUNCH_SYMBOL)
    price_sol: PriceSol = launches.DEFAULT_PRICE_SOL
    liquidity_sol: LiquiditySol = launches.DEFAULT_LIQUIDITY_SOL


def _invalid(field: str, message: str) -> InvalidOrder:
    return InvalidOrder(f"{field}: {message}", [{"field": field, "message": message}])


def _new_mint(mint: str) -> str:
    """A mint a launch may create: a 32-byte base58 address, not a program's, not listed."""
    try:
        Pubkey.from_string(mint)
    except ValueError:
        raise _invalid("mint", "not a base58 address of 32 bytes") from None
    if mint in RESERVED_ADDRESSES:
        raise _invalid("mint", "a program's address, never a token's mint")
    if resolve_token(mint) is not None:
        raise _invalid("mint", "a listed token's mint")
    return mint


def validate_launch(body: Any) -> LaunchCreate:
    """A decoded launch body as a `LaunchCreate`, or `InvalidJson`/`InvalidOrder` (400)."""
    if not isinstance(body, dict):
        raise InvalidJson(
            "a launch must be a JSON object", [{"field": "body", "message": "expected an object"}]
        )
    try:
        req = LaunchCreate.model_validate(body)
    except ValidationError as err:
        details = pydantic_details(err)
        raise InvalidOrder(f"{details[0]['field']}: {details[0]['message']}", details) from None
    if req.mint is not None:
        _new_mint(req.mint)
    return req


async def _launch_request(request: Request) -> LaunchCreate:
    raw = await read_body(request)
    if raw or "content-type" in request.headers:  # a body (or a type) must say it is JSON
        check_json_content_type(request)
    if not raw:  # no body at all: every field takes its default
        return LaunchCreate()
    return validate_launch(parse_json(raw))


@router.post(
    "/launches",
    status_code=201,
    responses=ERROR_RESPONSES,
    summary="SIMULATION: launch a new token with its first pool; waiting snipers fire",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": launch_schema()}},
        }
    },
)
async def create_launch(res: Res, request: Request) -> dict[str, Any]:
    req = await _launch_request(request)
    try:
        launch = await launches.launch(
            res.redis, req.mint, req.symbol, req.price_sol, req.liquidity_sol
        )
    except launches.LaunchError as exc:
        raise Conflict(str(exc)) from None
    except ValueError as exc:  # the bounds above exclude it; kept as a clear refusal regardless
        raise _invalid("liquiditySol", str(exc)) from None
    fired = await triggers.fire_snipers(res.db, res.redis, launch.token.mint, launch.token.symbol)
    return {
        "mint": launch.token.mint,
        "symbol": launch.token.symbol,
        "decimals": launch.token.decimals,
        "dex": launch.pool.venue,
        "pool": launch.pool.address,
        "poolKind": launch.pool.kind,
        "priceSol": dec_str(launch.price_sol),
        "liquiditySol": dec_str(launch.liquidity_sol),
        "snipersTriggered": fired,
    }
