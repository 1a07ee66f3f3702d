"""Key management (`/api/admin/keys`, `admin` scope in every AUTH_MODE), account risk limits
(`/api/admin/accounts/{name}/limits`), and short-lived WebSocket tokens (`/api/ws-tokens`)."""

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import APIRouter, Path, Query
from pydantic import Field, PlainValidator, StrictStr, WithJsonSchema

from app.auth import WS_TOKEN_TTL_S
from app.callers import Admin, Reader
from app.deps import Res, Resources
from app.errors import ERROR_RESPONSES
from app.risk import allowed_mints
from shared import apikeys
from shared.apikeys import ACCOUNT_PATTERN, MAX_KEY_NAME, Scope
from shared.db import Conn
from shared.errors import InvalidOrder, NotFound
from shared.grammar import token_pattern
from shared.market.tokens import TOKENS, resolve_token
from shared.models import CamelModel, integral
from shared.numbers import dec_str

router = APIRouter(prefix="/api", tags=["accounts and keys"], responses=ERROR_RESPONSES)

AccountName = Annotated[StrictStr, Field(pattern=ACCOUNT_PATTERN, max_length=64)]


class KeyCreate(CamelModel):
    model_config = CamelModel.model_config | {"extra": "forbid"}

    account: AccountName
    scopes: list[Scope] = Field([Scope.TRADE], min_length=1, max_length=3)
    name: StrictStr = Field("", max_length=MAX_KEY_NAME)


class KeyInfo(CamelModel):
    id: str
    account: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(KeyInfo):
    key: str = Field(description="the whole key: shown this once, never stored")


class KeyList(CamelModel):
    keys: list[KeyInfo]


MAX_USD = 10**15
MAX_COUNT = 10**6
_DIGITS = re.compile(r"0|[1-9][0-9]{0,14}", re.ASCII)


def _whole(value: object, limit: int, digits_ok: bool = False) -> int | None:
    """`value` as a whole number from 0 to `limit`, else None. A JSON integer, 60.0 included
    (FastAPI decodes it as a float), and with `digits_ok` a string of digits."""
    number = integral(value)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    elif digits_ok and isinstance(number, str) and _DIGITS.fullmatch(number):
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= limit:
        return None
    return number


def _usd(value: object) -> int:
    number = _whole(value, MAX_USD, digits_ok=True)
    if number is None:
        raise ValueError("whole US dollars from 0 to 10^15, as a number or a string of digits")
    return number


def _count(value: object) -> int:
    number = _whole(value, MAX_COUNT)
    if number is None:
        raise ValueError(f"a whole number from 0 to {MAX_COUNT}")
    return number


WholeUsd = Annotated[
    int,
    PlainValidator(_usd),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_USD},
                {"type": "string", "pattern": f"^(?:{_DIGITS.pattern})$"},
            ],
            "description": "whole USD",
        }
    ),
]
Count = Annotated[
    int,
    PlainValidator(_count),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_COUNT}),
]

# A listed token's symbol (any ASCII case) or mint: the schema's pattern is exactly what
# `token_mints` resolves.
ListedToken = Annotated[
    StrictStr, Field(max_length=64, json_schema_extra={"pattern": token_pattern(list(TOKENS))})
]


class AccountLimitsBody(CamelModel):
    """Risk-limit overrides: a field left out keeps its value, null returns to the default,
    0 means no limit."""

    model_config = CamelModel.model_config | {"extra": "forbid"}

    max_notional_usd: WholeUsd | None = None
    max_open_orders: Count | None = None
    max_orders_per_s: Count | None = None
    allowed_tokens: list[ListedToken] | None = Field(
        None, max_length=100, description="symbols or mints; null = every token"
    )


class AccountLimitsOut(CamelModel):
    account: str
    max_notional_usd: str | None
    max_open_orders: int | None
    max_orders_per_s: int | None
    allowed_tokens: list[str] | None


class WsToken(CamelModel):
    token: str
    expires_in_seconds: int


T = TypeVar("T")


async def _with_conn(res: Resources, work: Callable[[Conn], Awaitable[T]]) -> T:
    """`work` on a pooled connection, within PostgreSQL's deadline (503 when it is down)."""

    async def run(db: asyncpg.Pool) -> T:
        async with db.acquire() as conn:
            return await work(conn)

    return await res.pg_guard.run(run)


@router.post("/admin/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, res: Res, _: Admin) -> dict[str, Any]:
    """Make a key for an account (created if new). The key is in this answer only."""
    new = await _with_conn(
        res, lambda conn: apikeys.create_key(conn, body.account, body.scopes, body.name)
    )
    return KeyCreated(
        id=new.id,
        key=new.key,
        account=new.account,
        name=new.name,
        scopes=new.scopes,
        created_at=new.created_at,
    ).model_dump(by_alias=True, mode="json")


@router.get("/admin/keys", response_model=KeyList)
async def list_keys(
    res: Res,
    _: Admin,
    account: Annotated[str | None, Query(pattern=ACCOUNT_PATTERN, max_length=64)] = None,
) -> dict[str, Any]:
    rows = await _with_conn(res, lambda conn: apikeys.list_keys(conn, account))
    return KeyList(keys=[KeyInfo(**row) for row in rows]).model_dump(by_alias=True, mode="json")


@router.delete("/admin/keys/{key_id}", response_model=KeyInfo)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=64)], res: Res, _: Admin
) -> dict[str, Any]:
    """Revoke a key: it stops working at once here, within AUTH_CACHE_S elsewhere."""
    revoked = await _with_conn(res, lambda conn: apikeys.revoke_key(conn, key_id))
    if revoked is None:
        raise NotFound(f"no API key {key_id[:64]!r}")
    res.auth.forget(key_id)
    return KeyInfo(**revoked).model_dump(by_alias=True, mode="json")


@router.put("/admin/accounts/{account}/limits", response_model=AccountLimitsOut)
async def set_limits(
    account: Annotated[str, Path(pattern=ACCOUNT_PATTERN, max_length=64)],
    body: AccountLimitsBody,
    res: Res,
    _: Admin,
) -> dict[str, Any]:
    """Set an account's risk-limit overrides (the account is created if new)."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("allowed_tokens") is not None:
        changes["allowed_tokens"] = token_mints(changes["allowed_tokens"])
    limits = await _with_conn(res, lambda conn: apikeys.set_limits(conn, account, changes))
    res.risk.forget(account)
    return limits_out(account, limits)


def token_mints(names: list[str]) -> list[str]:
    try:
        mints = allowed_mints(",".join(names))
    except ValueError as exc:
        raise InvalidOrder(
            str(exc).replace("RISK_ALLOWED_TOKENS", "allowedTokens"),
            [{"field": "allowedTokens", "message": "unknown token"}],
        ) from None
    return sorted(mints or ())


def limits_out(account: str, limits: apikeys.Limits) -> dict[str, Any]:
    def symbol(mint: str) -> str:
        token = resolve_token(mint)
        return token.symbol if token else mint

    notional = limits.max_notional_usd
    tokens = limits.allowed_tokens
    return AccountLimitsOut(
        account=account,
        max_notional_usd=None if notional is None else dec_str(notional),
        max_open_orders=limits.max_open_orders,
        max_orders_per_s=limits.max_orders_per_s,
        allowed_tokens=None if tokens is None else sorted(symbol(m) for m in tokens),
    ).model_dump(by_alias=True)


@router.post("/ws-tokens", status_code=201, response_model=WsToken)
async def create_ws_token(res: Res, caller: Reader) -> dict[str, Any]:
    """A token for one WebSocket (`?token=`), valid for 60 s: browsers cannot send a key
    header on a WebSocket, and a long-lived key never goes in a URL."""
    token = await res.auth.issue_ws_token(caller)
    return {"token": token, "expiresInSeconds": WS_TOKEN_TTL_S}
