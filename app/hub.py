"""Fans order events out to WebSockets: one Redis subscription per API process.

Each socket gets a bounded queue; the hub never blocks on a slow reader. A reader whose queue
overflows is told so (and resumes from PostgreSQL with `afterSeq`), and when the subscription
itself was interrupted every reader is told to catch up from PostgreSQL, which holds every event.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event and its JSON text, encoded once for every socket that receives it."""

    event: dict[str, Any]
    text: str


RESYNC = Delivery({"resync": True}, "")


class Subscription:
    def __init__(self, order_id: str, maxsize: int) -> None:
        self.order_id = order_id
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, event: Delivery) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


class EventHub:
    """Started and stopped by the app's lifespan."""

    def __init__(self, redis: Redis, queue_size: int = 256) -> None:
        self.redis = redis
        self.queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscribe(self, order_id: str) -> Iterator[Subscription]:
        sub = Subscription(order_id, self.queue_size)
        self._subs.setdefault(order_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(order_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[order_id]

    def _broadcast_resync(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.offer(RESYNC)

    async def _run(self) -> None:
        delay_s = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.EVENTS_CHANNEL)
                self.ready.set()
                # Anything published while we were not subscribed is only in PostgreSQL.
                self._broadcast_resync()
                delay_s = 0.1
                async for message in pubsub.listen():
                    self._dispatch(message["data"])
            except RedisError as exc:
                self.ready.clear()
                log.warning("event hub lost Redis (%s); resubscribing in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, data: bytes) -> None:
        event = orjson.loads(data)
        subs = self._subs.get(event.get("orderId", ""))
        if subs:
            delivery = Delivery(event, data.decode())
            for sub in subs:
                sub.offer(delivery)
