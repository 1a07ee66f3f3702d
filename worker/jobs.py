"""arq job functions: thin wrappers that turn pipeline outcomes into arq's vocabulary."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from arq import Retry
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.logs import ORDER_ID, REQUEST_ID
from worker.engine import Engine
from worker.pipeline import RetryLater, run_order

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def job_lease(redis: Redis, job_id: str, lease_s: float) -> AsyncIterator[None]:
    """Keep arq's in-progress key alive only while this process is alive.

    arq marks a running job with a key that lives for the whole job timeout (+10 s), so a job
    whose worker was SIGKILLed would wait that long before another worker may take it. The
    claim (`worker.claim.OrderWorker`) gives the key `lease_s` instead, and renewing it from
    here means a dead worker's order is picked up again within one lease.
    """
    key = in_progress_key_prefix + job_id
    lease_ms = int(lease_s * 1000)

    async def renew() -> None:
        while True:  # the claim (worker.claim) started the lease
            await asyncio.sleep(lease_s / 3)
            try:
                await redis.pexpire(key, lease_ms)
            except RedisError as exc:
                log.warning("job %s: lease renewal failed: %s", job_id, exc)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def execute_order(ctx: dict[str, Any], order_id: str, request_id: str | None = None) -> str:
    """Run one order; a transient failure re-queues it with backoff through arq's `Retry`.

    `request_id`: the request that created the order, for the log lines of this job."""
    engine: Engine = ctx["engine"]
    ORDER_ID.set(order_id)  # each job runs in a task of its own: these stay with this order
    REQUEST_ID.set(request_id)
    engine.metrics.job_started()
    try:
        async with job_lease(ctx["redis"], ctx["job_id"], engine.settings.job_lease_s):
            outcome = await run_order(engine, uuid.UUID(order_id))
    finally:
        engine.metrics.job_ended()
    if isinstance(outcome, RetryLater):
        raise Retry(defer=outcome.delay_s)
    return outcome
