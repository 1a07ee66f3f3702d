"""The raw database work of one order, without the engine: what the engine's overhead is
measured against.

- `naive`: 1 INSERT of the order, then 5 x (UPDATE the order + INSERT its event), each pair a
  transaction of its own: 6 commits and 11 statements per order.
- `actual`: the engine's own statements, `queries.insert_order` (order + pending event in one
  CTE, inside a transaction as the API runs it) and 4 x `queries.transition` (one CTE each,
  autocommit as the worker runs them): 5 commits per order.

Both run `concurrency` orders at once on their own connections, for a fixed time, in a
database of their own on the same server as the engine.
"""

import asyncio
import time
import uuid
from typing import Any

import asyncpg

from shared import queries
from shared.db import create_pool
from shared.models import validate_order

NAIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_orders (
    id uuid PRIMARY KEY, status text NOT NULL, payload jsonb NOT NULL,
    last_seq integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS naive_events (
    order_id uuid NOT NULL REFERENCES naive_orders (id), seq integer NOT NULL,
    status text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(),
    data jsonb NOT NULL DEFAULT '{}', PRIMARY KEY (order_id, seq));
"""
STATUSES = ("pending", "routing", "building", "submitted", "confirmed")
# What the worker's transitions write, in shape and size close to the real events.
_EVENT_DATA: dict[str, dict[str, Any]] = {
    "routing": {"chosen": "raydium", "reason": "best net output", "quotes": [{"dex": "raydium"}]},
    "building": {"dex": "raydium", "txHash": "5" * 88, "computeUnitPrice": 50_000},
    "submitted": {"txHash": "5" * 88, "slot": 123},
    "confirmed": {"dex": "raydium", "txHash": "5" * 88, "executedPrice": "150.1", "slot": 124},
}
_ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.01"}


async def _naive_order(conn: asyncpg.Connection) -> None:
    oid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO naive_orders (id, status, payload) VALUES ($1, 'new', $2)", oid, _ORDER
    )
    for seq, status in enumerate(STATUSES, start=1):
        async with conn.transaction():
            await conn.execute(
                "UPDATE naive_orders SET status = $2, last_seq = $3, updated_at = now()"
                " WHERE id = $1",
                oid,
                status,
                seq,
            )
            await conn.execute(
                "INSERT INTO naive_events (order_id, seq, status, data) VALUES ($1, $2, $3, $4)",
                oid,
                seq,
                status,
                _EVENT_DATA.get(status, {}),
            )


async def _actual_order(conn: asyncpg.Connection) -> None:
    oid = uuid.uuid4()
    order = validate_order(dict(_ORDER))
    async with conn.transaction():
        await queries.insert_order(conn, oid, order)
    previous = ("pending",)
    for status in STATUSES[1:]:
        event = await queries.transition(
            conn, oid, status, attempt=1, data=_EVENT_DATA[status], allowed_from=previous
        )
        assert event is not None, f"transition to {status} refused"
        previous = (status,)


async def _run(pool: asyncpg.Pool, one: Any, concurrency: int, seconds: float) -> dict[str, Any]:
    """Run `one(conn)` in a loop on `concurrency` connections for `seconds`."""
    done = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.monotonic() < deadline:
                await one(conn)
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"orders": done, "seconds": round(elapsed, 2), "orders_per_s": round(done / elapsed, 1)}


async def prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(NAIVE_SCHEMA)
    finally:
        await conn.close()


async def measure(url: str, kind: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """Orders per second of the `naive` or `actual` statements at `concurrency`."""
    one: Any = {"naive": _naive_order, "actual": _actual_order}[kind]
    pool = await create_pool(url, min_size=concurrency, max_size=concurrency)
    try:
        async with pool.acquire() as conn:  # warm the statement caches
            await one(conn)
        return await _run(pool, one, concurrency, seconds) | {"concurrency": concurrency}
    finally:
        await pool.close()
