"""Routes order events from Redis to the sockets following each order: one Redis subscription
per API process.

Each event is decoded and framed once (`app.frames`), whatever the number of sockets following
its order, and handed to each of them (`Receiver.deliver`); what a socket then writes, and
when, is its own business (`app.stream`). The hub never waits for a socket.

Every event is in PostgreSQL before it is published, so whatever the live feed misses is read
back from there: after the subscription was interrupted every socket is told to resync, and
every `check_s` the hub compares each socket with its order's latest seq in PostgreSQL and
resyncs those that stalled behind it (a worker that died between its commit and its publish).

The hub also remembers every event of the latest orders it saw from their first event on, so
a socket opened just after its POST replays from memory. Memory is only a shortcut: an order
with a gap, an order the check finds behind PostgreSQL, an order a socket had to catch up on,
and everything after a resubscription are left to PostgreSQL.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.frames import Delivery
from shared import keys

log = logging.getLogger(__name__)

_DB_AWAY = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
LastSeqs = Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, int]]]


class Receiver(Protocol):
    """A socket following an order, as the hub sees it (`app.stream.OrderStream`)."""

    def deliver(self, d: Delivery) -> None:
        """A live event of the order; must not block."""

    def resync(self) -> None:
        """The live feed may have missed events of the order; must not block."""

    def stalled_behind(self, stored: int) -> bool:
        """Whether the socket has stayed behind `stored`, the order's latest seq in
        PostgreSQL, since the previous check."""


class EventHub:
    """Started and stopped by the app's lifespan."""

    def __init__(
        self,
        redis: Redis,
        last_seqs: LastSeqs,
        check_s: float = 5.0,
        replay_orders: int = 2048,
    ) -> None:
        self.redis = redis
        self._last_seqs = last_seqs
        self._check_s = check_s
        self._subs: dict[str, set[Receiver]] = {}
        # The latest `replay_orders` orders seen from their first event on: order id -> every
        # event so far (seq 1..n, no gap), oldest order first. A socket that opens just after
        # its POST replays from here instead of reading PostgreSQL.
        self._replay_orders = replay_orders
        self._recent: dict[str, list[Delivery]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="event-hub"),
            asyncio.create_task(self._check_loop(), name="event-hub-check"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.contextmanager
    def subscribe(self, order_id: str, receiver: Receiver) -> Iterator[None]:
        """Route the order's events to `receiver` while in the block."""
        self._subs.setdefault(order_id, set()).add(receiver)
        try:
            yield
        finally:
            subs = self._subs.get(order_id)
            if subs is not None:
                subs.discard(receiver)
                if not subs:
                    del self._subs[order_id]

    def remember(self, event: dict[str, Any]) -> None:
        """Record an event this process committed itself (the `pending` of an order it just
        accepted), so the order's socket can replay it before the channel brings it back."""
        self._remember(event["orderId"], Delivery.of(event))

    def forget(self, order_id: str) -> None:
        """Stop replaying the order from memory: PostgreSQL has events the channel did not
        bring (a publish was lost). Later sockets read PostgreSQL."""
        self._recent.pop(order_id, None)

    def recent(self, order_id: str, after_seq: int) -> list[Delivery] | None:
        """The order's events after `after_seq` as this hub saw them, or None when it cannot
        tell (an order it has not seen from the start, or an `afterSeq` past what it saw): then
        PostgreSQL has the answer. An empty list means nothing yet, and more to come."""
        seen = self._recent.get(order_id)
        if seen is None or after_seq > len(seen) or (after_seq == len(seen) and seen[-1].terminal):
            return None
        return seen[after_seq:]

    def _remember(self, order_id: str, d: Delivery) -> None:
        seen = self._recent.get(order_id)
        if seen is None:
            if d.seq != 1 or self._replay_orders <= 0:
                return
            if len(self._recent) >= self._replay_orders:
                del self._recent[next(iter(self._recent))]
            self._recent[order_id] = [d]
        elif d.seq == len(seen) + 1:
            seen.append(d)
        elif d.seq > len(seen) + 1:  # a gap: only PostgreSQL has the whole history now
            del self._recent[order_id]

    def _broadcast_resync(self) -> None:
        for subs in self._subs.values():
            for receiver in subs:
                receiver.resync()

    async def _run(self) -> None:
        delay_s = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.EVENTS_CHANNEL)
                self.ready.set()
                # Anything published while we were not subscribed is only in PostgreSQL.
                self._recent.clear()
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
        """One channel message: an event, or a JSON array of events in order."""
        try:
            decoded = orjson.loads(data)
        except ValueError:
            decoded = None
        if isinstance(decoded, list):
            for event in decoded:
                self._dispatch_event(event, None)
        else:
            self._dispatch_event(decoded, data)

    def _dispatch_event(self, event: Any, raw: bytes | None) -> None:
        """`raw`: the message, when it was just this event (its JSON, framed as it is)."""
        try:
            order_id = event.get("orderId", "")
            subs = self._subs.get(order_id)
            remembered = order_id in self._recent or (
                event.get("seq") == 1 and self._replay_orders > 0
            )
            if not subs and not remembered:  # nobody needs it framed
                return
            delivery = Delivery.of(event, raw)
        except (ValueError, KeyError, TypeError, AttributeError):  # not an event: never ours
            log.warning("event hub skipped a malformed event: %.200r", raw or event)
            return
        self._remember(order_id, delivery)
        for receiver in subs or ():  # nothing here awaits, so the set cannot change under us
            receiver.deliver(delivery)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_s)
            try:
                await self.check()
            except _DB_AWAY as exc:  # the next round tries again
                log.warning("event hub could not compare sockets with PostgreSQL: %r", exc)

    async def check(self) -> None:
        """Resync every socket that was behind its order's latest stored event at the last
        check and has not moved since (so an event merely in flight is left to arrive)."""
        if not self._subs:
            return
        latest = await self._last_seqs([uuid.UUID(order_id) for order_id in self._subs])
        for order_id, seq in latest.items():
            key = str(order_id)
            seen = self._recent.get(key)
            if seen is not None and len(seen) < seq:  # in flight, or lost: memory may be stale
                self.forget(key)
            for receiver in self._subs.get(key, ()):
                if receiver.stalled_behind(seq):
                    receiver.resync()
