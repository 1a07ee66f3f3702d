"""`python -m app keys …` and `python -m app accounts …`: manage API keys and account risk
limits against the configured database (DATABASE_URL), with no API running.

    python -m app keys create --account NAME [--scope read|trade|admin ...] [--name LABEL]
    python -m app keys list [--account NAME]
    python -m app keys revoke KEY_ID
    python -m app accounts limits NAME [--max-notional-usd N] [--max-open-orders N]
                                       [--max-orders-per-s N] [--allowed-tokens SOL,USDC]

`keys create` prints the key alone on its last line (shown once: only its hash is kept).
"""

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg

from app.risk import allowed_mints
from shared import apikeys
from shared.db import init_connection, migrate
from shared.settings import get_settings

Command = Callable[[asyncpg.Connection, argparse.Namespace], Awaitable[int]]


def _account(value: str) -> str:
    if not re.match(apikeys.ACCOUNT_PATTERN, value):
        raise argparse.ArgumentTypeError("lowercase letters, digits, '_', '.', '-'; at most 64")
    return value


def _limit(value: str) -> int | None:
    """A count limit: a number (0 = no limit) or `default` (the settings')."""
    return None if value == "default" else int(value)


def _notional(value: str) -> Decimal | None:
    if value == "default":
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError("a number >= 0")
    return amount


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    groups = parser.add_subparsers(dest="group", required=True)
    keys = groups.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="make a key; prints it alone on the last line")
    create.add_argument("--account", required=True, type=_account)
    create.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in apikeys.Scope],
        help="read, trade (default) or admin; each includes the ones before it",
    )
    create.add_argument("--name", default="", help="a label for lists")
    listing = keys.add_parser("list", help="keys (never their secrets)")
    listing.add_argument("--account", type=_account)
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    accounts = groups.add_parser("accounts", help="accounts' risk limits")
    limits = accounts.add_subparsers(dest="action", required=True).add_parser(
        "limits", help="show or set an account's overrides ('default' = the settings')"
    )
    limits.add_argument("account", type=_account)
    # Left out: unchanged (SUPPRESS leaves no attribute); 'default': back to the settings'.
    unset = argparse.SUPPRESS
    limits.add_argument("--max-notional-usd", type=_notional, default=unset)
    limits.add_argument("--max-open-orders", type=_limit, default=unset)
    limits.add_argument("--max-orders-per-s", type=_limit, default=unset)
    limits.add_argument(
        "--allowed-tokens", default=unset, help="comma-separated symbols or mints, or 'default'"
    )
    return parser


async def _create(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    scopes = [apikeys.Scope(s) for s in (args.scope or ["trade"])]
    new = await apikeys.create_key(conn, args.account, scopes, args.name[: apikeys.MAX_KEY_NAME])
    print(f"key {new.id} for account {new.account}, scopes {','.join(new.scopes)}")
    print("shown once; keep it secret (only its hash is stored):")
    print(new.key)
    return 0


async def _list(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    for row in await apikeys.list_keys(conn, args.account):
        state = "revoked" if row["revoked_at"] else "active"
        used = row["last_used_at"].isoformat() if row["last_used_at"] else "never"
        print(
            f"{row['id']}  {row['account']:<20} {','.join(row['scopes']):<16} {state:<8}"
            f" created {row['created_at'].isoformat()}  last used {used}  {row['name']}"
        )
    return 0


async def _revoke(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    row = await apikeys.revoke_key(conn, args.key_id)
    if row is None:
        print(f"no API key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {row['id']} (account {row['account']}) at {row['revoked_at'].isoformat()}")
    return 0


async def _limits(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for name in ("max_notional_usd", "max_open_orders", "max_orders_per_s"):
        if hasattr(args, name):
            changes[name] = getattr(args, name)
    if hasattr(args, "allowed_tokens"):
        mints = None if args.allowed_tokens == "default" else allowed_mints(args.allowed_tokens)
        changes["allowed_tokens"] = None if mints is None else sorted(mints)
    limits = await apikeys.set_limits(conn, args.account, changes)
    print(f"account {args.account}: {limits} (None = the settings' default, 0 = no limit)")
    return 0


COMMANDS: dict[tuple[str, str], Command] = {
    ("keys", "create"): _create,
    ("keys", "list"): _list,
    ("keys", "revoke"): _revoke,
    ("accounts", "limits"): _limits,
}


async def _run(args: argparse.Namespace) -> int:
    url = get_settings().database_url
    if not url:
        print("DATABASE_URL is not set (`make run` prints it at start)", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        await migrate(conn)  # the first admin key can be made before the API ever starts
        return await COMMANDS[(args.group, args.action)](conn, args)
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    try:
        return asyncio.run(_run(build_parser().parse_args(argv)))
    except ValueError as exc:  # an unknown token in --allowed-tokens
        print(f"error: {exc}", file=sys.stderr)
        return 2
