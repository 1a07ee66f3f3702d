"""Re-drives orders whose job was lost, so an accepted order always reaches a terminal status."""

import asyncio
import logging

from shared import queries, triggers
from shared.outages import OUTAGE_ERRORS
from worker.engine import Engine

log = logging.getLogger(__name__)


async def sweep(engine: Engine) -> int:
    """Find open orders with no live job (the API died before queueing, Redis lost its queue,
    arq gave up) and queue them again; returns how many were re-queued.

    Safe to run in every worker at once: a job's id is its order's id, so enqueues collapse.
    """
    settings = engine.settings
    # Orders idle for two leases are worth a look: a live run renews its lease every third of
    # one, and a lease-less in-progress mark past that point belongs to a dead worker.
    idle_s = min(settings.stale_order_s, 2 * settings.job_lease_s)
    async with engine.db.acquire() as conn:
        rows = await queries.stale_open_orders(conn, idle_s)
        await queries.forget_idempotency_keys(conn)
    requeued = 0
    for row in rows:
        job_id = str(row.id)
        if await engine.jobs.is_running(job_id):
            await _free_if_unleased(engine, job_id)
            continue
        if await engine.jobs.is_live(job_id) or row.idle_s < settings.stale_order_s:
            continue
        if await engine.jobs.requeue(job_id):
            requeued += 1
            log.warning(
                "sweeper: re-queued order %s (status %s, idle since %s)",
                row.id,
                row.status,
                row.updated_at.isoformat(),
            )
    return requeued


async def _free_if_unleased(engine: Engine, job_id: str) -> None:
    """A mark longer than any lease was not set by `QueueWorker` (e.g. a worker of an older
    release, which marked a job for its whole timeout, died mid-job): nobody renews it, so
    dropping it lets any worker take the job (still in the queue) at once. Were the run alive
    after all, the fencing token in PostgreSQL stops it from writing once the new run starts."""
    if await engine.jobs.release_unleased(job_id, engine.settings.job_lease_s):
        log.warning("sweeper: job %s held an in-progress mark no lease renews; released", job_id)


REINDEX_EVERY_PASSES = 12  # the waiting set is re-checked against PostgreSQL about once a minute


async def run_sweeper(engine: Engine) -> None:
    """Sweep every SWEEP_INTERVAL_S until cancelled.

    This loop is what finishes orders whose job was lost, so nothing may end it: a pass that
    fails (an outage, a bug) is logged with its traceback and the next pass runs as usual.
    Every few passes the waiting (limit/sniper) index is rebuilt from PostgreSQL too, in case
    Redis lost it or an indexing write failed.
    """
    passes = 0
    while True:
        try:
            await sweep(engine)
            if passes % REINDEX_EVERY_PASSES == 0:
                await triggers.rebuild_index(engine.db, engine.redis)
        except OUTAGE_ERRORS as exc:
            log.warning("sweeper: pass failed (%r); retrying next interval", exc)
        except Exception:  # this loop must outlive any single failure (see the docstring)
            log.exception("sweeper: pass failed; retrying next interval")
        passes += 1
        await asyncio.sleep(engine.settings.sweep_interval_s)
