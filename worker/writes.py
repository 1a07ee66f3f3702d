"""The worker's writes for running orders, coalesced across the orders running at once."""

import logging
import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import events, queries
from shared.batching import Coalescer
from shared.queries import Move
from shared.rows import OrderRow

log = logging.getLogger(__name__)


class Writes:
    """Status transitions and run starts, each batch in one statement (one commit).

    A batch of transitions is committed, then its events are published in one pipeline, and
    only then do the callers go on: an order's next step never overtakes its last event.
    """

    def __init__(self, db: asyncpg.Pool, redis: Redis) -> None:
        self._db, self._redis = db, redis
        self._moves: Coalescer[Move, dict[str, Any] | None] = Coalescer(self._flush_moves)
        self._runs: Coalescer[uuid.UUID, OrderRow | None] = Coalescer(self._flush_runs)

    async def move(self, move: Move) -> dict[str, Any] | None:
        """Apply and publish one transition; its event, or None if the guard refused it."""
        return await self._moves.submit(move)

    async def start_run(self, order_id: uuid.UUID) -> OrderRow | None:
        """`queries.start_runs` for one order."""
        return await self._runs.submit(order_id)

    async def _flush_moves(self, moves: list[Move]) -> list[dict[str, Any] | None]:
        async with self._db.acquire() as conn:
            results = await queries.transition_many(conn, moves)
        applied = [event for event in results if event is not None]
        try:
            await events.publish_many(self._redis, applied)
        except RedisError as exc:  # subscribers catch up from PostgreSQL
            log.warning("publishing %d events failed: %s", len(applied), exc)
        return results

    async def _flush_runs(self, order_ids: list[uuid.UUID]) -> list[OrderRow | None]:
        async with self._db.acquire() as conn:
            return await queries.start_runs(conn, order_ids)
