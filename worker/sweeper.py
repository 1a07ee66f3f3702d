"""Re-drives orders whose job was lost, so an accepted order always reaches a terminal status."""

import asyncio
import logging

import asyncpg
from arq.jobs import Job, JobStatus

from shared import keys, queries
from shared.queue import enqueue_order
from worker.engine import Engine

log = logging.getLogger(__name__)

_LIVE = (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)


async def sweep(engine: Engine) -> int:
    """Find open orders with no live job (the API died before queueing, Redis lost its queue,
    arq gave up) and queue them again; returns how many were re-queued.

    Safe to run in every worker at once: a job's id is its order's id, so enqueues collapse.
    """
    redis = engine.redis
    async with engine.db.acquire() as conn:
        rows = await queries.stale_open_orders(conn, engine.settings.stale_order_s)
        await queries.forget_idempotency_keys(conn)
    requeued = 0
    for row in rows:
        job = Job(str(row["id"]), redis, _queue_name=keys.QUEUE_NAME)
        if await job.status() in _LIVE:
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


async def run_sweeper(engine: Engine) -> None:
    """Sweep every SWEEP_INTERVAL_S until cancelled; outages are logged and retried."""
    while True:
        try:
            await sweep(engine)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("sweeper: skipped a pass: %r", exc)
        await asyncio.sleep(engine.settings.sweep_interval_s)
