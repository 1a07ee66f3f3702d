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

    Pub/sub is best effort by nature (nobody listening = dropped); subscribers recover
    anything missed from PostgreSQL, which already holds the events.
    """
    if not events:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.publish(keys.EVENTS_CHANNEL, encode(event))
            if event["status"] in TERMINAL_STATUSES:
                pipe.srem(keys.ACTIVE_ORDERS, event["orderId"])
            elif event["seq"] == 1:
                pipe.sadd(keys.ACTIVE_ORDERS, event["orderId"])
        await pipe.execute()
