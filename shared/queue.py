"""Queueing order jobs (arq): the one place that names the job and its id scheme."""

import uuid

from arq.connections import ArqRedis

from shared import keys

EXECUTE_ORDER = "execute_order"


async def enqueue_order(redis: ArqRedis, order_id: uuid.UUID | str, defer_s: float = 0) -> bool:
    """Queue the order's job; its id is the order id, so duplicates collapse. False if queued."""
    job = await redis.enqueue_job(
        EXECUTE_ORDER,
        str(order_id),
        _job_id=str(order_id),
        _queue_name=keys.QUEUE_NAME,
        _defer_by=defer_s or None,
    )
    return job is not None
