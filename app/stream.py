"""One socket following one order: replay, live delivery, resync and close, all written here.

Replay then live, with no gap and no duplicate: the stream registers with the hub *before* it
reads history (from the hub's memory of recent orders, else PostgreSQL), then drops live events
it already sent (by `seq`). Anything the live feed missed (a Redis blip, a full buffer, a
publish that was lost) is read back from PostgreSQL.

Every write to the socket is made by this class, in one of two ways. While the socket's task
waits with nothing to do, an event the hub routes here that is the next one goes straight out
through the server's prepared-frame writer (`app.wsserver`), in the hub's call: no task switch
and no per-socket encoding, which is what a burst to thousands of sockets needs. Anything else
(a gap, a resync, a full send buffer, a server without the extension) wakes the task, which
sends through ASGI, waiting for the buffer at most `send_timeout_s`. Which of the two may write
is one flag, `_idle`, set only by the task while it waits and cleared by whichever side hands
work to the task.
"""

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import asyncpg
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.frames import Delivery
from app.hub import EventHub
from app.outages import Dependency
from app.wsserver import PREPARED_FRAMES
from shared import queries
from shared.errors import ServiceUnavailable
from shared.models import TERMINAL_STATUSES
from shared.rows import OrderRow

# Writes a whole frame now (then closes, given a code and reason), or nothing and returns False.
Write = Callable[[bytes, tuple[int, str] | None], bool]

FINISHED_CLOSE = (1000, "order finished")
CLOSE_GOING_AWAY = 1001
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408  # the reader fell too far behind; reconnect with afterSeq
CLOSE_TRY_AGAIN = 1013  # PostgreSQL did not answer in time; reconnect with afterSeq
CLOSE_GRACE_S = 5.0


class ReaderTooSlow(Exception):
    """The client is not reading fast enough for its buffer, or a send timed out."""


def prepared_writer(ws: WebSocket) -> Write | None:
    """The server's prepared-frame writer for this socket (`app.wsserver`), if it has one."""
    extension = ws.scope.get("extensions", {}).get(PREPARED_FRAMES)
    return None if extension is None else cast(Write, extension["write"])


async def _unwound(task: asyncio.Task[None]) -> None:
    """Wait for `task` to end after it was cancelled (if it had not ended already). Whatever
    it raises on the way out propagates, as does a cancellation of our own."""
    if task.done():
        return
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class OrderStream:
    """The events of `order_id` on one accepted WebSocket; `run` streams them to the end."""

    __slots__ = (
        "_behind_at", "_db", "_hub", "_idle", "_overflowed", "_queue", "_queue_size",
        "_resync", "_send_timeout_s", "_wakeup", "_writer", "_ws", "closed", "finished", "last",
        "order_id", "too_slow",
    )  # fmt: skip

    def __init__(
        self,
        ws: WebSocket,
        order_id: uuid.UUID,
        hub: EventHub,
        db: Dependency[asyncpg.Pool],
        *,
        queue_size: int,
        send_timeout_s: float,
        writer: Write | None = None,
    ) -> None:
        self._ws = ws
        self.order_id = order_id
        self._hub = hub
        self._db = db
        self._writer = writer
        self._queue: deque[Delivery] = deque()
        self._queue_size = queue_size
        self._send_timeout_s = send_timeout_s
        self._wakeup = asyncio.Event()
        self._idle = False  # the task waits with nothing to do: deliveries may write directly
        self._resync = False  # the hub says the live feed missed something
        self._overflowed = False
        self._behind_at = -1  # `last` when the hub's check first found it behind PostgreSQL
        self.last = 0  # the seq of the last event written to the socket
        self.finished = False  # the terminal event was written
        self.closed = False  # ... and the close frame with it
        self.too_slow = False  # closed 4408: the reader fell behind

    # -- called by the hub (synchronous: the hub never waits for a socket) --------------------

    def deliver(self, d: Delivery) -> None:
        """A live event of this order."""
        if self.finished:
            return
        if self._idle:
            if d.seq <= self.last:
                return  # sent already (history and live overlap)
            if d.seq == self.last + 1 and self.write_now(d):
                if self.finished:
                    self._wake()  # closed with the terminal event: the task has only to end
                return
        self._hand_to_task(d)

    def resync(self) -> None:
        """The live feed may have missed events: read PostgreSQL for them."""
        self._resync = True
        self._hand_to_task(None)

    def stalled_behind(self, stored: int) -> bool:
        """The hub's periodic check, with `stored` the order's latest seq in PostgreSQL: True
        when the socket was behind it at the previous check too and has not moved since (an
        event merely in flight has had a whole period to arrive)."""
        if self.finished or self.last >= stored:
            self._behind_at = -1
            return False
        if self._behind_at == self.last:
            self._behind_at = -1
            return True
        self._behind_at = self.last
        return False

    def _hand_to_task(self, d: Delivery | None) -> None:
        self._idle = False
        if d is not None:
            if len(self._queue) >= self._queue_size:
                self._overflowed = True
            else:
                self._queue.append(d)
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    # -- the socket's task -------------------------------------------------------------------

    async def run(self, after_seq: int) -> None:
        """Stream the order after `after_seq` until its terminal event (then close 1000), the
        client leaves, or the client reads too slowly (close 4408 with the seq to resume from).
        An unknown order is closed with 4404."""
        self.last = after_seq
        with self._hub.subscribe(str(self.order_id), self):
            streamer = asyncio.create_task(self._stream())
            reader = asyncio.create_task(self._drain_client())
            try:
                await asyncio.wait((streamer, reader), return_when=asyncio.FIRST_COMPLETED)
            finally:  # whichever ends first (or our own cancellation) ends both
                streamer.cancel()
                reader.cancel()
            for task in (streamer, reader):
                await _unwound(task)
        # The client leaving ends the stream as its end does; anything else is a fault.
        resumable: tuple[int, str] | None = None
        for task in (streamer, reader):
            exc = None if task.cancelled() else task.exception()
            if isinstance(exc, ReaderTooSlow):
                resumable = (CLOSE_TOO_SLOW, "reader too slow")
                self.too_slow = True
            elif isinstance(exc, ServiceUnavailable):
                resumable = (CLOSE_TRY_AGAIN, exc.message)
            elif exc is not None and not isinstance(exc, WebSocketDisconnect):
                raise exc
        if resumable is not None:  # unsubscribed already; now say why, briefly
            await self._close_resumable(*resumable)

    async def _stream(self) -> None:
        recent = self._hub.recent(str(self.order_id), self.last)
        if recent is not None:  # the hub saw the order from its first event: no read
            await self._send_all(recent)
        elif not await self._replay_stored():
            return  # no such order: closed with 4404
        while not self.finished:
            if self._overflowed:
                raise ReaderTooSlow
            if self._resync:
                self._resync = False
                await self._catch_up()
            elif self._queue:
                d = self._queue.popleft()
                if d.seq > self.last + 1:  # a gap: PostgreSQL has what is missing
                    await self._catch_up()
                elif d.seq == self.last + 1:
                    await self._send(d)
            else:
                self._wakeup.clear()
                self._idle = True
                await self._wakeup.wait()
                self._idle = False
        if not self.closed:
            await self._ws.close(*FINISHED_CLOSE)
            self.closed = True

    async def _drain_client(self) -> None:
        """Read (and ignore) client messages so a disconnect is noticed at once."""
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return

    async def _close_resumable(self, code: int, why: str) -> None:
        reason = f"{why[:60]}; reconnect with afterSeq={max(self.last, 0)}"
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):  # a stalled reader may never take it
                await self._ws.close(code, reason)
        except TimeoutError:
            return  # the server's own close timeout drops the connection

    async def _replay_stored(self) -> bool:
        """Replay from PostgreSQL; False (after closing with 4404) when the order does not
        exist."""
        after_seq = self.last
        await self._catch_up()
        if self.last == after_seq and not self.finished:  # nothing after afterSeq
            row = await self._db.run(self._read_order)
            if row is None:
                await self._ws.close(CLOSE_NOT_FOUND, f"order {self.order_id} not found")
                self.closed = True
                return False
            if row.status in TERMINAL_STATUSES and row.last_seq <= self.last:
                self.finished = True  # resumed after the terminal event: nothing more will come
            else:
                self.last = min(self.last, row.last_seq)  # an afterSeq past the end: go live
        return True

    async def _catch_up(self) -> None:
        """Send every stored event after `last`, up to the terminal one."""
        self._hub.forget(str(self.order_id))  # the live feed missed something: memory may too
        history = await self._db.run(self._read_events)
        await self._send_all([Delivery.of(event) for event in history])

    async def _read_order(self, db: asyncpg.Pool) -> OrderRow | None:
        async with db.acquire() as conn:
            return await queries.get_order(conn, self.order_id)

    async def _read_events(self, db: asyncpg.Pool) -> list[dict[str, Any]]:
        async with db.acquire() as conn:
            return await queries.get_events(conn, self.order_id, self.last)

    async def _send_all(self, events: list[Delivery]) -> None:
        """Send `events` (consecutive seqs after `last`), up to the terminal one: in one write
        when the socket takes it at once (a replay is often the whole order), else one by
        one."""
        for end, d in enumerate(events):
            if d.terminal:
                events = events[: end + 1]
                break
        if not events or self.write_now(*events):
            return
        for d in events:
            await self._send(d)
            if self.finished:
                break

    async def _send(self, d: Delivery) -> None:
        """Send one event: straight to the socket when it takes it at once, else through
        ASGI, waiting for its buffer at most `send_timeout_s`."""
        if self.write_now(d):
            return
        if self._ws.client_state != WebSocketState.CONNECTED:
            raise WebSocketDisconnect(CLOSE_GOING_AWAY)
        try:
            async with asyncio.timeout(self._send_timeout_s):  # no task per send, unlike wait_for
                await self._ws.send_text(d.text)
        except TimeoutError:
            raise ReaderTooSlow from None
        self.last = d.seq
        self.finished = d.terminal

    def write_now(self, *ds: Delivery) -> bool:
        """Write `ds` (the events after `last`, in order, only the last one may be terminal)
        in one write, closing the socket after a terminal event, if the socket takes it at
        once, and advance; False, writing nothing, when there is no writer or it is busy."""
        if self._writer is None:
            return False
        end = ds[-1]
        close = FINISHED_CLOSE if end.terminal else None
        if not self._writer(end.frame if len(ds) == 1 else b"".join(d.frame for d in ds), close):
            return False
        self.last = end.seq
        self.finished = self.closed = end.terminal
        return True
