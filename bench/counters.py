"""Server-side counters read before and after a step: Redis commands and PostgreSQL work."""

from typing import Any

import asyncpg
from redis.asyncio import Redis


async def redis_commands(url: str) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    redis = Redis.from_url(url)
    try:
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def redis_memory_mb(url: str) -> float:
    redis = Redis.from_url(url)
    try:
        info = await redis.info("memory")
    finally:
        await redis.aclose()
    return round(int(info["used_memory"]) / 2**20, 2)


async def pg_database(url: str) -> dict[str, int]:
    """Transactions and rows of the database `url` names (pg_stat_database)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched,"
            " tup_returned FROM pg_stat_database WHERE datname = current_database()"
        )
        wal = await conn.fetchrow("SELECT wal_records, wal_bytes FROM pg_stat_wal")
        try:  # PostgreSQL 16+: WAL flushes are in pg_stat_io
            fsyncs = await conn.fetchval(
                "SELECT sum(fsyncs)::bigint FROM pg_stat_io WHERE object = 'wal'"
            )
        except asyncpg.PostgresError:
            fsyncs = None
    finally:
        await conn.close()
    out = {k: int(v) for k, v in dict(row or {}).items()}
    out.update({k: int(v) for k, v in dict(wal or {}).items()})
    if fsyncs is not None:
        out["wal_fsyncs"] = int(fsyncs)
    return out


def per_unit(before: dict[str, int], after: dict[str, int], units: int) -> dict[str, float]:
    """(after - before) / units for every counter that moved, largest first."""
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    ordered = sorted(((k, v) for k, v in moved.items() if v > 0), key=lambda kv: -kv[1])
    return {k: round(v / max(units, 1), 2) for k, v in ordered}


async def snapshot(redis_url: str, pg_url: str) -> dict[str, Any]:
    return {"redis": await redis_commands(redis_url), "pg": await pg_database(pg_url)}


def per_order(before: dict[str, Any], after: dict[str, Any], orders: int) -> dict[str, Any]:
    redis = per_unit(before["redis"], after["redis"], orders)
    return {
        "redis_commands": round(sum(redis.values()), 1),
        "redis_by_command": redis,
        "pg": per_unit(before["pg"], after["pg"], orders),
    }


async def reset_statements(url: str) -> bool:
    """Start pg_stat_statements afresh; False when the extension is not loaded."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        return True
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()


async def top_statements(url: str, orders: int, limit: int = 15) -> list[dict[str, Any]]:
    """This database's statements by calls: calls and server time per order, mean ms."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT calls, total_exec_time, mean_exec_time, rows, query
            FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            ORDER BY calls DESC LIMIT $1
            """,
            limit,
        )
    finally:
        await conn.close()
    return [
        {
            "calls_per_order": round(r["calls"] / max(orders, 1), 2),
            "server_ms_per_order": round(r["total_exec_time"] / max(orders, 1), 3),
            "mean_ms": round(r["mean_exec_time"], 3),
            "query": " ".join(r["query"].split())[:160],
        }
        for r in rows
    ]
