"""Re-drives orders whose job was lost, so an accepted order always reaches a terminal status."""

import logging
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from shared import keys, queries
from shared.queue import enqueue_order
from worker.engine import Engine

log = logging.getLogger(__name__)


async def sweep(ctx: dict[str, Any]) -> int:
    """Find open orders with no live job (API died before enqueue, Redis lost its queue, arq
    gave up) and queue them again; returns how many were re-queued."""
    engine: Engine = ctx["engine"]
    redis: ArqRedis = ctx["redis"]
    async with engine.db.acquire() as conn:
        rows = await queries.stale_open_orders(conn, engine.settings.stale_order_s)
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'"
        )
    requeued = 0
    for row in rows:
        job = Job(str(row["id"]), redis, _queue_name=keys.QUEUE_NAME)
        if await job.status() in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress):
            continue
        await redis.delete(f"arq:result:{row['id']}")
        if await enqueue_order(redis, row["id"]):
            requeued += 1
            log.warning(
                "sweeper: re-queued order %s (status %s, idle since %s)",
                row["id"],
                row["status"],
                row["updated_at"].isoformat(),
            )
    return requeued
