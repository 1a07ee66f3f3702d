"""Fans order events out to WebSockets: one Redis subscription per API process.

Each event is decoded and framed once, whatever the number of sockets following its order.
A socket whose task is idle lends the hub a writer (see `app.wsserver`), and the hub writes the
next event to it directly: no task switch and no per-socket encoding. Anything else goes
through the socket's bounded queue to its task: a gap in seqs, a resync, or a socket whose
send buffer is full. The hub never blocks on a slow reader; a reader whose queue overflows is
told so (and resumes from PostgreSQL with `afterSeq`).

Every event is in PostgreSQL before it is published, so whatever the live feed misses is read
back from there: after the subscription was interrupted every socket is told to catch up, and
every `check_s` the hub compares each socket with its order's latest seq in PostgreSQL, which
repairs a publish that was lost (a worker that died between its commit and its publish).

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
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.wsserver import text_frame
from shared import keys
from shared.models import TERMINAL_STATUSES

log = logging.getLogger(__name__)

# Writes a whole frame now (then closes, given a code and reason), or nothing and returns False.
Write = Callable[[bytes, tuple[int, str] | None], bool]
FINISHED_CLOSE = (1000, "order finished")
_DB_AWAY = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
LastSeqs = Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, int]]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event, framed once for every socket that receives it. `seq` 0: not an event."""

    frame: bytes  # the whole WebSocket text frame: `header_len` bytes, then the JSON
    seq: int
    terminal: bool
    header_len: int = 0

    @classmethod
    def of(cls, event: dict[str, Any], raw: bytes | None = None) -> "Delivery":
        raw = orjson.dumps(event) if raw is None else raw
        frame = text_frame(raw)
        terminal = event["status"] in TERMINAL_STATUSES
        return cls(frame, int(event["seq"]), terminal, len(frame) - len(raw))

    @property
    def text(self) -> str:
        """The event's JSON, for a server without prepared frames (or a full send buffer)."""
        return self.frame[self.header_len :].decode()


# Markers, never sent (seq 0); the bytes only tell them apart.
RESYNC = Delivery(b"resync", 0, False)  # read PostgreSQL for what was missed
WAKE = Delivery(b"wake", 0, False)  # the hub finished the socket's stream


class Subscription:
    """One socket's place in the hub. Whoever sends to the socket advances `last`."""

    __slots__ = (
        "_lagging", "_lent", "closed", "finished", "last", "order_id", "overflowed", "queue",
        "writer",
    )  # fmt: skip

    def __init__(self, order_id: str, maxsize: int, writer: Write | None = None) -> None:
        self.order_id = order_id
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.writer = writer  # the server's prepared-frame writer for this socket, if any
        self.last = 0  # the seq of the last event sent on this socket
        self.finished = False  # the terminal event was sent
        self.closed = False  # ... and the close frame with it
        self._lent = False  # the hub may write in the task's place
        self._lagging = -1  # `last` when the hub's check first saw it behind PostgreSQL

    def lend(self) -> None:
        """The socket's task waits with nothing queued: the hub may write in its place."""
        self._lent = self.writer is not None

    def reclaim(self) -> None:
        """The task sends again; the hub only queues."""
        self._lent = False

    def write_now(self, *ds: Delivery) -> bool:
        """Write `ds` (the events after `last`, in order, only the last one may be terminal) in
        one write, closing the socket after a terminal event, if the socket takes it at once,
        and advance; False, writing nothing, when there is no writer or the socket is busy."""
        if self.writer is None:
            return False
        end = ds[-1]
        close = FINISHED_CLOSE if end.terminal else None
        if not self.writer(end.frame if len(ds) == 1 else b"".join(d.frame for d in ds), close):
            return False
        self.last = end.seq
        self.finished = self.closed = end.terminal
        return True

    def deliver(self, d: Delivery) -> None:
        if self._lent and d.seq:
            if d.seq <= self.last:
                return  # sent already (history and live overlap)
            if d.seq == self.last + 1 and self.write_now(d):
                if d.terminal:
                    self._lent = False
                    self._offer(WAKE)  # the task has nothing left to do but end
                return
        self._lent = False  # a gap, a resync, or a full send buffer: the task takes over
        self._offer(d)

    def compare(self, stored: int) -> None:
        """The hub's periodic check: `stored` is the order's latest seq in PostgreSQL."""
        if self.finished or self.last >= stored:
            self._lagging = -1
        elif self._lagging == self.last:  # behind, and no progress for a whole check period
            self._lagging = -1
            self.deliver(RESYNC)
        else:
            self._lagging = self.last

    def _offer(self, d: Delivery) -> None:
        try:
            self.queue.put_nowait(d)
        except asyncio.QueueFull:
            self.overflowed = True


class EventHub:
    """Started and stopped by the app's lifespan."""

    def __init__(
        self,
        redis: Redis,
        queue_size: int,
        last_seqs: LastSeqs,
        check_s: float = 5.0,
        replay_orders: int = 2048,
    ) -> None:
        self.redis = redis
        self.queue_size = queue_size
        self._last_seqs = last_seqs
        self._check_s = check_s
        self._subs: dict[str, set[Subscription]] = {}
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
    def subscribe(self, order_id: str, writer: Write | None = None) -> Iterator[Subscription]:
        sub = Subscription(order_id, self.queue_size, writer)
        self._subs.setdefault(order_id, set()).add(sub)
        try:
            yield sub
        finally:
            sub.reclaim()
            subs = self._subs.get(order_id)
            if subs is not None:
                subs.discard(sub)
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
            for sub in subs:
                sub.deliver(RESYNC)

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
        for sub in subs or ():  # nothing here awaits, so the set cannot change under us
            sub.deliver(delivery)

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
            for sub in self._subs.get(key, ()):
                sub.compare(seq)
