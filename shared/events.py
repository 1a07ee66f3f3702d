"""Publishing order events to live subscribers after they are committed to PostgreSQL."""

from typing import Any

import orjson
from redis.asyncio import Redis

from shared import keys
from shared.models import TERMINAL_STATUSES


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


async def publish(redis: Redis, event: dict[str, Any]) -> None:
    """Publish one committed event and keep the active-orders cache in step with it.

    Pub/sub is best effort by nature (nobody listening = dropped); subscribers recover
    anything missed from PostgreSQL, which already holds the event.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.publish(keys.EVENTS_CHANNEL, encode(event))
        if event["status"] in TERMINAL_STATUSES:
            pipe.srem(keys.ACTIVE_ORDERS, event["orderId"])
        elif event["seq"] == 1:
            pipe.sadd(keys.ACTIVE_ORDERS, event["orderId"])
        await pipe.execute()
