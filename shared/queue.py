"""Queueing order jobs (arq): the one place that names the job and its id scheme.

Jobs are written in arq's own format (`serialize_job`, the job key, the queue's sorted set),
so arq's worker runs them, but in one Lua script rather than arq's WATCH / EXISTS /
MULTI…EXEC (three round trips); the script can also publish the order's first event in the
same round trip.
"""

import time
import uuid
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.commands.core import AsyncScript

from shared import keys
from shared.events import encode

EXECUTE_ORDER = "execute_order"

# KEYS: job, result, queue, active-orders set. ARGV: job id, score, ttl ms, job, event, channel.
# Like arq's enqueue_job: a job id that is queued, running or has a result is not queued again.
# The publish + SADD mirror `shared.events.publish_many` for a first (seq 1) event.
_ENQUEUE = """
if ARGV[5] ~= '' then
    redis.call('PUBLISH', ARGV[6], ARGV[5])
    redis.call('SADD', KEYS[4], ARGV[1])
end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""
# Hashed once (`register_script` would hash it on every POST, ~2 % of one). Registered to no
# client: each call names its own, which also loads the script if the server lacks it.
_ENQUEUE_SCRIPT = AsyncScript(cast(Any, None), _ENQUEUE.encode())


async def enqueue_order(
    redis: ArqRedis,
    order_id: uuid.UUID | str,
    defer_s: float = 0,
    first_event: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> bool:
    """Queue the order's job; its id is the order id, so duplicates collapse. False if queued.

    With `first_event` (the order's `pending` event), publish it in the same round trip.
    `request_id` (the request that created the order) goes with the job, for the worker's logs.
    """
    job_id = str(order_id)
    now_ms = int(time.time() * 1000)
    score = now_ms + int(defer_s * 1000)
    kwargs = {} if request_id is None else {"request_id": request_id}
    job = serialize_job(
        EXECUTE_ORDER, (job_id,), kwargs, None, now_ms, serializer=redis.job_serializer
    )
    queued = await _ENQUEUE_SCRIPT(
        keys=[
            job_key_prefix + job_id,
            result_key_prefix + job_id,
            keys.QUEUE_NAME,
            keys.ACTIVE_ORDERS,
        ],
        args=[
            job_id,
            score,
            score - now_ms + redis.expires_extra_ms,
            job,
            encode(first_event) if first_event is not None else "",
            keys.EVENTS_CHANNEL,
        ],
        client=redis,
    )
    return bool(queued)
