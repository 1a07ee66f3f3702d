"""arq job functions: thin wrappers that turn pipeline outcomes into arq's vocabulary."""

import uuid
from typing import Any

from arq import Retry

from shared.jobqueue import Lease
from worker.engine import Engine
from worker.pipeline import RetryLater, run_order


async def execute_order(ctx: dict[str, Any], order_id: str) -> str:
    """Run one order, holding the job's lease; a transient failure re-queues it with backoff
    through arq's `Retry`."""
    engine: Engine = ctx["engine"]
    lease: Lease = ctx["lease"]
    async with lease(ctx["job_id"]):
        outcome = await run_order(engine, uuid.UUID(order_id))
    if isinstance(outcome, RetryLater):
        raise Retry(defer=outcome.delay_s)
    return outcome
