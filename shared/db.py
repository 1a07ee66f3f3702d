"""PostgreSQL connection pool and the migration runner."""

import json
import logging
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# What query functions accept: a plain connection or one borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_TIMEOUT_S = 3600.0  # a migration may rewrite a large table
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_ID = 7_150_420_001


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: Conn) -> None:
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg's default runs RESET ALL / UNLISTEN / CLOSE ALL / advisory
    unlock on every release (a round trip each time); the engine keeps no session state (no
    SET, LISTEN or session-level locks), and asyncpg still rolls back any open transaction."""


async def create_pool(
    dsn: str, min_size: int = 2, max_size: int = 20, timeout_s: float = 5.0
) -> asyncpg.Pool:
    """A pool whose connections encode/decode json and jsonb as Python objects.

    Connecting and every statement time out after `timeout_s`, so an unresponsive server
    turns into an error (a 503 at the API) rather than a hung request.
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_keep_session,
        command_timeout=timeout_s,
        timeout=timeout_s,
    )
    assert pool is not None
    return pool


async def migrate(conn: Conn, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every numbered `.sql` file not yet recorded, in order; returns those applied.

    Several processes may start at once: a transaction-scoped advisory lock makes one of
    them apply the files while the others wait and then find nothing left to do.
    """
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for name, sql in _migration_files(directory):
            if name in done:
                continue
            await conn.execute(sql, timeout=MIGRATION_TIMEOUT_S)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
            applied.append(name)
            log.info("applied migration %s", name)
    return applied


def _migration_files(directory: Path) -> list[tuple[str, str]]:
    """(file name, SQL) of every migration, in order; a few small files read at start-up."""
    return [(p.name, p.read_text()) for p in sorted(directory.glob("*.sql"))]
