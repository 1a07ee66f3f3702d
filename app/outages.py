"""Every call the API makes to PostgreSQL or Redis answers in time, whatever the server does.

A frozen server (SIGSTOP, a partition, a full disk) accepts connections and then says nothing.
The drivers' own timeouts then stack: asyncpg waits for the statement, then for the cancel
request, then for the release; redis-py makes every caller queue behind one connect attempt
(its pool holds a lock while it connects). So the API never awaits a driver directly: a call
runs in a task of its own and the request waits for it at most `timeout_s`. A call that is
given up on goes on by itself until the driver ends it, and cleans up its own connection.

The first call that fails for an outage opens a breaker: while it is open, calls fail at once
with 503 (nothing is sent, so nothing can happen later), and a probe asks the server every
`PROBE_INTERVAL_S`; the first probe that succeeds closes the breaker, so requests succeed again
within a fraction of a second of the server's return.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from shared.errors import ServiceUnavailable
from shared.outages import OUTAGE_ERRORS

log = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")

PROBE_INTERVAL_S = 0.25
RETRY_AFTER_S = 2


class Dependency(Generic[C]):
    """A server the API depends on, as seen through a client `C`, with a deadline per call and
    a breaker (see the module doc). `run(fn)` calls `fn(client)`."""

    def __init__(
        self,
        name: str,
        client: C,
        timeout_s: float,
        probe: Callable[[C], Awaitable[object]],
    ) -> None:
        self.name = name
        self.client = client
        self.timeout_s = timeout_s
        self._probe = probe
        self._down_since: float | None = None
        self.errors = 0  # calls that failed for an outage (`dependency_errors_total`)
        self._prober: asyncio.Task[None] | None = None
        self._orphans: set[asyncio.Task[object]] = set()

    @property
    def up(self) -> bool:
        """False from the first call that failed for an outage until a probe succeeds."""
        return self._down_since is None

    def unavailable(self) -> ServiceUnavailable:
        return ServiceUnavailable(f"{self.name} is unavailable; retry shortly", RETRY_AFTER_S)

    async def run(self, fn: Callable[[C], Awaitable[T]]) -> T:
        """`fn(client)`, answered within `timeout_s`; `ServiceUnavailable` on an outage (and at
        once while the breaker is open). Other errors propagate unchanged."""
        if self._down_since is not None:
            raise self.unavailable()
        try:
            return await self._within_deadline(fn(self.client))
        except OUTAGE_ERRORS as exc:
            self.errors += 1
            self.trip(exc)
            raise self.unavailable() from exc

    async def check(self) -> float:
        """Probe the server now (breaker or not); the round trip in seconds. Raises on failure."""
        started = time.perf_counter()
        await self._within_deadline(self._probe(self.client))
        return time.perf_counter() - started

    def trip(self, exc: BaseException) -> None:
        """Open the breaker (if it is not open yet) and start probing for the server's return."""
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        log.warning("%s is unavailable (%r); answering 503 until it is back", self.name, exc)
        self._prober = asyncio.create_task(self._probe_until_up(), name=f"probe-{self.name}")

    async def close(self) -> None:
        """Stop probing and end calls still running after their request gave up on them."""
        pending = [*self._orphans, *([self._prober] if self._prober else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _within_deadline(self, work: Awaitable[T]) -> T:
        # What `asyncio.timeout` around `asyncio.shield` does, without their bookkeeping: the
        # caller waits on one future that the call's end or the deadline resolves, whichever
        # comes first; the call itself is never cancelled from here.
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(work)
        waiter = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        deadline = loop.call_later(self.timeout_s, wake)
        try:
            await waiter
        finally:
            deadline.cancel()
            if not task.done():  # given up on (deadline or cancelled request): let it end alone
                task.remove_done_callback(wake)
                self._orphans.add(task)
                task.add_done_callback(self._orphan_done)
        if not task.done():
            raise TimeoutError(f"{self.name} did not answer within {self.timeout_s} s")
        return task.result()

    def _orphan_done(self, task: asyncio.Task[object]) -> None:
        self._orphans.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its request already answered for it

    async def _probe_until_up(self) -> None:
        assert self._down_since is not None
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self.check()
            except Exception as exc:  # any failure means "not back yet"; the next probe decides
                log.debug("%s probe failed: %r", self.name, exc)
                continue
            log.warning("%s is back after %.1f s", self.name, time.monotonic() - self._down_since)
            self._down_since = None
            self._prober = None
            return
