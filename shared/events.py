"""Publishing order events to live subscribers after they are committed to PostgreSQL."""

from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from shared import keys
from shared.models import TERMINAL_STATUSES


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


async def publish(redis: Redis, event: dict[str, Any]) -> None:
    """Publish one committed event: see `publish_many`."""
    await publish_many(redis, [event])


async def publish_many(redis: Redis, events: Sequence[dict[str, Any]]) -> None:
    """Publish committed events, in order, and keep the active-orders cache in step with them,
    in one round trip.

    However many events, they go out as one message: the event itself, or a JSON array of them
    in order (`app.hub` reads both). A worker's batch of a hundred transitions then costs
    Redis, and every API process, one message instead of a hundred.

    Pub/sub is best effort by nature (nobody listening = dropped); subscribers recover
    anything missed from PostgreSQL, which already holds the events.
    """
    if not events:
        return
    # An order that starts and ends in the same batch is added, then removed.
    ended = [e["orderId"] for e in events if e["status"] in TERMINAL_STATUSES]
    started = [
        e["orderId"] for e in events if e["seq"] == 1 and e["status"] not in TERMINAL_STATUSES
    ]
    async with redis.pipeline(transaction=False) as pipe:
        message = encode(events[0]) if len(events) == 1 else orjson.dumps(list(events))
        pipe.publish(keys.EVENTS_CHANNEL, message)
        if started:
            pipe.sadd(keys.ACTIVE_ORDERS, *started)
        if ended:
            pipe.srem(keys.ACTIVE_ORDERS, *ended)
        await pipe.execute()
