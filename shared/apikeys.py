"""Accounts and API keys: the key format, its hashing, and the SQL that keeps them.

A key reads `oee_<id>_<secret>`: `id` (12 hex digits) names the key in lists and revocations,
`secret` is 256 random bits (base64url). Only SHA-256(secret) is stored; a presented key is
found by its id and the hash of its secret. The whole key is shown once, when
it is made, and never logged or echoed.
"""

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from shared.db import Conn

PUBLIC_ACCOUNT = "public"
ACCOUNT_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_KEY = re.compile(r"^oee_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
MAX_KEY_NAME = 100


class Scope(StrEnum):
    """What a key may do. Each scope includes the ones before it: `trade` can read, and
    `admin` can trade, manage keys and drive the simulation."""

    READ = "read"
    TRADE = "trade"
    ADMIN = "admin"


_RANK = {Scope.READ: 0, Scope.TRADE: 1, Scope.ADMIN: 2}


def grants(scopes: frozenset[Scope], needed: Scope) -> bool:
    return any(_RANK[s] >= _RANK[needed] for s in scopes)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the account whose orders they see and make, and what they may do."""

    account: str
    scopes: frozenset[Scope]
    key_id: str | None  # None: the anonymous caller of AUTH_MODE=open
    # The highest scope's rank, worked out once: a scope check runs on every request.
    level: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", max((_RANK[s] for s in self.scopes), default=-1))

    def can(self, needed: Scope) -> bool:
        return self.level >= _RANK[needed]


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    key: str  # the whole key: shown once, never stored
    account: str
    name: str
    scopes: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Limits:
    """An account's pre-trade risk overrides (None: the settings' default)."""

    max_notional_usd: Decimal | None
    max_open_orders: int | None
    max_orders_per_s: int | None
    allowed_tokens: frozenset[str] | None


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.match(presented)
    return None if match is None else (match.group(1), match.group(2))


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def create_key(conn: Conn, account: str, scopes: list[Scope], name: str = "") -> NewKey:
    """Make a key for `account` (created if new); the returned `key` is the only copy."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    wanted = sorted({s.value for s in scopes}, key=lambda s: _RANK[Scope(s)])
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO accounts (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", account
        )
        created_at = await conn.fetchval(
            """INSERT INTO api_keys (id, account, name, secret_hash, scopes)
               VALUES ($1, $2, $3, $4, $5) RETURNING created_at""",
            key_id,
            account,
            name,
            _hash(secret),
            wanted,
        )
    return NewKey(key_id, f"oee_{key_id}_{secret}", account, name, wanted, created_at)


async def use_key(conn: Conn, key_id: str, secret: str) -> tuple[str, list[str]] | None:
    """(account, scopes) of a live key whose secret matches, marking it used; else None.

    The secret is compared by its SHA-256 (a hash lookup: timing tells nothing useful)."""
    row = await conn.fetchrow(
        """UPDATE api_keys SET last_used_at = now()
           WHERE id = $1 AND secret_hash = $2 AND revoked_at IS NULL
           RETURNING account, scopes""",
        key_id,
        _hash(secret),
    )
    return None if row is None else (row["account"], list(row["scopes"]))


async def list_keys(conn: Conn, account: str | None) -> list[dict[str, Any]]:
    """Every key (of one account), newest last, without anything secret."""
    rows = await conn.fetch(
        """SELECT id, account, name, scopes, created_at, last_used_at, revoked_at
           FROM api_keys WHERE $1::text IS NULL OR account = $1 ORDER BY created_at, id""",
        account,
    )
    return [dict(r) for r in rows]


async def revoke_key(conn: Conn, key_id: str) -> dict[str, Any] | None:
    """Revoke a key (revoking twice keeps the first time); the key's listing, None if
    there is no such key."""
    row = await conn.fetchrow(
        """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
           RETURNING id, account, name, scopes, created_at, last_used_at, revoked_at""",
        key_id,
    )
    return None if row is None else dict(row)


async def account_limits(conn: Conn, account: str) -> Limits:
    row = await conn.fetchrow(
        """SELECT max_notional_usd, max_open_orders, max_orders_per_s, allowed_tokens
           FROM accounts WHERE name = $1""",
        account,
    )
    if row is None:
        return Limits(None, None, None, None)
    tokens = row["allowed_tokens"]
    return Limits(
        row["max_notional_usd"],
        row["max_open_orders"],
        row["max_orders_per_s"],
        None if tokens is None else frozenset(tokens),
    )


LIMIT_COLUMNS = ("max_notional_usd", "max_open_orders", "max_orders_per_s", "allowed_tokens")


async def set_limits(conn: Conn, account: str, changes: dict[str, Any]) -> Limits:
    """Set some of an account's risk-limit overrides (None: back to the settings' default),
    creating the account if it is new; returns all of them."""
    unknown = set(changes) - set(LIMIT_COLUMNS)
    if unknown:
        raise ValueError(f"not a risk limit: {sorted(unknown)}")
    names = list(changes)  # only names from LIMIT_COLUMNS reach the SQL text
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO accounts (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", account
        )
        if names:
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
            await conn.execute(
                f"UPDATE accounts SET {sets} WHERE name = $1",
                account,
                *(changes[n] for n in names),
            )
    return await account_limits(conn, account)
