"""arq job functions: thin wrappers that turn pipeline outcomes into arq's vocabulary."""

import logging
import uuid
from typing import Any

from arq import Retry

from shared.jobqueue import Lease
from shared.logs import ORDER_ID, REQUEST_ID
from shared.outages import OUTAGE_ERRORS
from worker.engine import Engine
from worker.pipeline import RetryLater, run_order

log = logging.getLogger(__name__)

# A run that fails on an outage (`shared.outages`) is run again shortly by the queue. Nothing of
# the order is spent: its state is in PostgreSQL, and a run cut short before sending a
# transaction makes the same attempt again; only its run count, which MAX_RUNS bounds, grows.
# The delay is short and capped, so that a run follows the dependency back within a second.
DEPENDENCY_RETRY_BASE_S = 0.1
DEPENDENCY_RETRY_MAX_S = 1.0


def dependency_retry_delay_s(job_try: int) -> float:
    return float(min(DEPENDENCY_RETRY_BASE_S * 2 ** min(job_try - 1, 10), DEPENDENCY_RETRY_MAX_S))


async def execute_order(ctx: dict[str, Any], order_id: str, request_id: str | None = None) -> str:
    """Run one order, holding the job's lease; a transient failure of the order re-queues it
    with the order's backoff, an outage of PostgreSQL or Redis with a short one (arq `Retry`).

    `request_id`: the request that created the order, for the log lines of this job."""
    engine: Engine = ctx["engine"]
    lease: Lease = ctx["lease"]
    ORDER_ID.set(order_id)  # each job runs in a task of its own: these stay with this order
    REQUEST_ID.set(request_id)
    engine.metrics.job_started()
    try:
        async with lease(ctx["job_id"]):
            outcome = await run_order(engine, uuid.UUID(order_id))
    except OUTAGE_ERRORS as exc:
        delay_s = dependency_retry_delay_s(ctx["job_try"])
        log.warning("order %s: running it again in %.1f s (%r)", order_id, delay_s, exc)
        raise Retry(defer=delay_s) from exc
    finally:
        engine.metrics.job_ended()
    if isinstance(outcome, RetryLater):
        raise Retry(defer=outcome.delay_s)
    return outcome
