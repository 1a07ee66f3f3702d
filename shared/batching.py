"""Coalescing concurrent calls into one round trip.

Many orders run at once in a worker, and each step of each order is a small statement. A
`Coalescer` hands every call made while the previous flush is still in flight to the next
flush as one list, so under load one statement (and one commit, one pipeline) carries many
orders' steps, and an idle engine still sends each call at once: the first call after a quiet
spell is flushed on the next turn of the event loop.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R]]]


class Coalescer(Generic[T, R]):
    """`await submit(item)` returns `flush([..., item, ...])`'s result for that item.

    At most `max_in_flight` flushes run at once, each with at most `max_batch` items. When a
    flush raises, every caller in that batch gets the exception. A caller that is cancelled
    does not take its item back: like any statement already sent, it may still be applied.
    With `timeout_s`, a flush that takes longer is cancelled and its callers get TimeoutError,
    so that one stuck round trip cannot hold every later call behind it; use it only where a
    flush cut short is safe to leave (its commands may or may not have been applied).
    """

    def __init__(
        self,
        flush: Flush[T, R],
        *,
        max_batch: int = 200,
        max_in_flight: int = 1,
        timeout_s: float | None = None,
    ):
        self._flush = flush
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._timeout_s = timeout_s
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._kick_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._kick_scheduled and self._in_flight < self._max_in_flight:
            # Wait one loop turn: calls made by other tasks in the same turn join this batch.
            self._kick_scheduled = True
            loop.call_soon(self._kick)
        return await future

    def _kick(self) -> None:
        self._kick_scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                results = await self._flush([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)}")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # every caller in the batch must hear about it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            if self._pending:
                self._kick()
