"""The job queue: the one module that knows how arq stores jobs.

arq keeps a queue as a sorted set of job ids scored by when each is due, a job's serialized
call under `arq:job:<id>`, a running job's mark under `arq:in-progress:<id>`, its try count
under `arq:retry:<id>` and its result under `arq:result:<id>`. Nothing else in the engine
names those keys or formats: the API queues orders (`enqueue_order`) and reads the queue's
depth (`depth_lua`); the worker is `QueueWorker` (arq's worker whose in-progress mark is a
short lease that the job renews through `QueueWorker.lease`, and whose finishes are
coalesced); the sweeper asks `JobQueue` whether a job is live and queues it again.

arq is pinned to one minor version in pyproject.toml; `tests/test_jobqueue_contract.py` fails
if an upgrade changes what this module relies on (the storage format, the worker's slots).
"""

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_ms
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from shared import keys
from shared.batching import Coalescer
from shared.events import encode

log = logging.getLogger(__name__)

EXECUTE_ORDER = "execute_order"

# A running job renews its lease every LEASE_RENEW_FRACTION of it, and stops itself once
# LEASE_STOP_FRACTION of it has passed since the last renewal that got through: before the
# mark can expire and another worker may take the job.
LEASE_RENEW_FRACTION = 0.25
LEASE_STOP_FRACTION = 0.75

# A finish that takes longer fails instead of holding every later finish, and so every job slot,
# behind it: the error (a TimeoutError, an OSError) ends arq's poll loop, and `worker.__main__`
# starts the worker again as after a lost Redis. Its commands are safe to leave half-sent: the
# job's lease expires and the order's run is fenced in PostgreSQL.
FINISH_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script as a value (its text and SHA1), not bound to any client.

    It runs on the client it is given, by hash, and is loaded into a server that lacks it on
    first use, as redis-py's own scripts do. Hashing once here spares every call the SHA1.
    """

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    async def run(self, redis: Redis, keys_: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys_), *keys_, *args)  # type: ignore[misc]
        except NoScriptError:
            return await redis.eval(self.source, len(keys_), *keys_, *args)  # type: ignore[misc]


# KEYS: job, result, queue, active-orders set. ARGV: job id, score, ttl ms, job, event, channel.
# arq's `enqueue_job` in one round trip instead of WATCH / EXISTS / MULTI…EXEC: a job id that
# is queued, running or has a result is not queued again. The PUBLISH + SADD mirror
# `shared.events.publish_many` for the order's first (seq 1) event.
_ENQUEUE = LuaScript("""
if ARGV[5] ~= '' then
    redis.call('PUBLISH', ARGV[6], ARGV[5])
    redis.call('SADD', KEYS[4], ARGV[1])
end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
""")


# KEYS: the queue. ARGV: now ms, lease ms, in-progress key prefix, at most how many, job ids in
# queue order (running jobs stay queued until they finish: skip them). arq's claim, for a whole
# poll in one round trip: the same checks (due, not running anywhere) and the same mark, for
# the lease rather than the job's timeout. Returns the claimed jobs: id, score, id, score...
_CLAIM = LuaScript("""
local out = {}
local limit = tonumber(ARGV[4])
for i = 5, #ARGV do
    if #out >= 2 * limit then break end
    local id = ARGV[i]
    local mark = ARGV[3] .. id
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score and tonumber(score) <= tonumber(ARGV[1]) and redis.call('EXISTS', mark) == 0 then
        redis.call('PSETEX', mark, ARGV[2], '1')
        out[#out + 1] = id
        out[#out + 1] = score
    end
end
return out
""")


def depth_lua(queue_key: str) -> str:
    """A Lua expression for the number of jobs queued (due, deferred or running) under the
    key that `queue_key` (e.g. `KEYS[2]`) names, for scripts that read it with other state."""
    return f"redis.call('ZCARD', {queue_key})"


class JobQueue:
    """The order queue on one Redis client: enqueue, depth, and the sweeper's questions."""

    def __init__(self, redis: ArqRedis, name: str = keys.QUEUE_NAME) -> None:
        self.redis = redis
        self.name = name

    async def enqueue(
        self,
        order_id: uuid.UUID | str,
        defer_s: float = 0,
        first_event: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> bool:
        """Queue the order's job; its id is the order id, so duplicates collapse. False if it
        was queued, running or finished already. With `first_event` (the order's `pending`
        event), publish that in the same round trip. `request_id` (the request that created
        the order) goes with the job, for the worker's logs."""
        job_id = str(order_id)
        now_ms = int(time.time() * 1000)
        score = now_ms + int(defer_s * 1000)
        kwargs = {} if request_id is None else {"request_id": request_id}
        job = serialize_job(
            EXECUTE_ORDER, (job_id,), kwargs, None, now_ms, serializer=self.redis.job_serializer
        )
        queued = await _ENQUEUE.run(
            self.redis,
            [job_key_prefix + job_id, result_key_prefix + job_id, self.name, keys.ACTIVE_ORDERS],
            [
                job_id,
                score,
                score - now_ms + self.redis.expires_extra_ms,
                job,
                encode(first_event) if first_event is not None else "",
                keys.EVENTS_CHANNEL,
            ],
        )
        return bool(queued)

    async def depth(self) -> int:
        """Jobs in the queue: due, deferred or running."""
        return int(await self.redis.zcard(self.name))

    async def is_live(self, job_id: str) -> bool:
        """Queued (due or deferred) or running somewhere: it will run without our help."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(in_progress_key_prefix + job_id)
            pipe.zscore(self.name, job_id)
            pipe.exists(job_key_prefix + job_id)
            running, score, stored = await pipe.execute()
        return bool(running) or (score is not None and bool(stored))

    async def is_running(self, job_id: str) -> bool:
        return bool(await self.redis.exists(in_progress_key_prefix + job_id))

    async def requeue(self, job_id: str) -> bool:
        """Queue a job whose earlier run is over for good (arq gave up on it, Redis lost it):
        a kept result would make `enqueue` refuse it, so it is dropped first."""
        await self.redis.delete(result_key_prefix + job_id)
        return await self.enqueue(job_id)

    async def release_unleased(self, job_id: str, lease_s: float) -> bool:
        """Drop an in-progress mark that outlives any lease (one left by something other than
        `QueueWorker`, e.g. a worker of another version that died mid-job), so the job, still
        queued, may run at once. True if one was dropped."""
        key = in_progress_key_prefix + job_id
        if await self.redis.pttl(key) > lease_s * 1000:
            await self.redis.delete(key)
            return True
        return False


async def enqueue_order(
    redis: ArqRedis,
    order_id: uuid.UUID | str,
    defer_s: float = 0,
    first_event: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> bool:
    """`JobQueue.enqueue` on the order queue of `redis`."""
    return await JobQueue(redis).enqueue(order_id, defer_s, first_event, request_id)


@dataclass(frozen=True, slots=True)
class _Finish:
    """The arguments of `arq.worker.Worker.finish_job`, plus whether the run lost its lease."""

    job_id: str
    finish: bool
    result_data: bytes | None
    result_timeout_s: float | None
    keep_result_forever: bool
    incr_score: int | None
    keep_in_progress: float | None
    lease_lost: bool


Lease = Callable[[str], AbstractAsyncContextManager[None]]


class QueueWorker(Worker):
    """arq's worker with four changes. They use arq's public methods (`start_jobs`, `run_job`,
    `finish_job`) and attributes (`sem`, `job_counter`, `tasks`, `pool`), nothing private;
    `tests/test_jobqueue_contract.py` pins the behaviour they rely on.

    - One script claims every job a poll can take (`_CLAIM`; see bench/README.md for what
      that saves), marking each in progress for `lease_s` rather than its whole timeout
      (+10 s). The running job renews the mark (`lease`, also in every job's `ctx` as
      `ctx["lease"]`): a killed worker's job can run elsewhere within one lease.
    - It never starts a job it is already running (after a Redis stall its own lease may have
      lapsed while the job kept running), and a run whose lease could not be renewed in time
      stops itself, before another worker can take the job: no order runs twice at once.
    - A run that lost its lease leaves the in-progress mark, maybe another worker's now, alone.
    - Jobs that end while an earlier finish is in flight share the next one: the commands of
      arq's `finish_job` for all of them in one MULTI/EXEC (`shared.batching.Coalescer`).
    """

    def __init__(self, *args: Any, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_s = lease_s
        self.ctx["lease"] = self.lease
        self._lease_lost: set[str] = set()
        self._finishes: Coalescer[_Finish, None] = Coalescer(
            self._finish_many, timeout_s=FINISH_TIMEOUT_S
        )

    @property
    def free_slots(self) -> int:
        """How many more jobs this worker would start now."""
        return self.max_jobs - self.job_counter

    def running(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        return task is not None and not task.done()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's `start_jobs`, with the claim of every job a poll can take in one script
        (`_CLAIM`) instead of four round trips per job id read, running ones included; and
        never a job this worker is running already (arq checks only the in-progress mark in
        Redis, which lapses if Redis stalls for a lease)."""
        ids = [j for j in (b.decode() for b in job_ids) if not self.running(j)]
        if not ids:
            return
        # Wait for one free slot, as arq does, then take whatever else is free right now.
        await self.sem.acquire()
        taken = 1
        while taken < len(ids) and not self.sem.locked():
            await self.sem.acquire()
            taken += 1
        slots = min(taken, max(self.free_slots, 0))
        for _ in range(taken - slots):
            self.sem.release()
        if not slots:
            return
        self.job_counter += slots
        try:
            claimed = await _CLAIM.run(
                self.pool,
                [self.queue_name],
                [timestamp_ms(), int(self.lease_s * 1000), in_progress_key_prefix, slots, *ids],
            )
        except BaseException:
            self._release_slots(slots)
            raise
        self._release_slots(slots - len(claimed) // 2)  # fewer jobs were claimable than slots
        for job_id, score in zip(claimed[::2], claimed[1::2], strict=True):
            job = job_id.decode()
            task = self.loop.create_task(self.run_job(job, int(score)))
            task.add_done_callback(lambda _: self._release_slots(1))
            self.tasks[job] = task

    def _release_slots(self, n: int) -> None:
        """Give back slots taken in `start_jobs` (the counterpart of arq's own release)."""
        self.job_counter -= n
        for _ in range(n):
            self.sem.release()

    @contextlib.asynccontextmanager
    async def lease(self, job_id: str) -> AsyncIterator[None]:
        """Renew the job's in-progress mark while the body runs; if the renewals stop getting
        through, cancel the body (arq runs the job again later) before the mark can expire."""
        job_task = asyncio.current_task()
        assert job_task is not None
        keeper = asyncio.create_task(self._keep_lease(job_id, job_task))
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_lease(self, job_id: str, job_task: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        key, lease_ms = in_progress_key_prefix + job_id, int(self.lease_s * 1000)
        hold_s = self.lease_s * LEASE_STOP_FRACTION
        why = f"no renewal got through in {hold_s:.1f} s"
        try:
            # The claim started the lease a moment ago; every renewal restarts the window.
            async with asyncio.timeout(hold_s) as window:
                while True:
                    await asyncio.sleep(self.lease_s * LEASE_RENEW_FRACTION)
                    sent = loop.time()
                    try:
                        held = await self.pool.pexpire(key, lease_ms)
                    except (RedisError, OSError) as exc:
                        log.warning("job %s: lease renewal failed: %s", job_id, exc)
                    else:
                        if not held:
                            why = "its in-progress mark is gone"
                            break
                        window.reschedule(sent + hold_s)
        except TimeoutError:
            pass
        log.warning("job %s: lease lost (%s); stopping this run", job_id, why)
        self._lease_lost.add(job_id)
        job_task.cancel()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        lost = job_id in self._lease_lost
        self._lease_lost.discard(job_id)
        f = _Finish(
            job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score,
            keep_in_progress, lost,
        )  # fmt: skip
        if lost and not finish and not incr_score:
            return  # nothing to do but leave the mark alone: it may be another worker's now
        await self._finishes.submit(f)

    async def _finish_many(self, finishes: list[_Finish]) -> list[None]:
        """arq's `finish_job`, command for command, for every job in one MULTI/EXEC; except
        that a run which lost its lease leaves the in-progress mark to whoever holds it now."""
        async with self.pool.pipeline(transaction=True) as tr:
            for f in finishes:
                in_progress_key = in_progress_key_prefix + f.job_id
                delete_keys = []
                if f.lease_lost:
                    pass
                elif f.keep_in_progress is None:
                    delete_keys.append(in_progress_key)
                else:
                    tr.pexpire(in_progress_key, to_ms(f.keep_in_progress))
                if f.finish:
                    if f.result_data:
                        expire = None if f.keep_result_forever else f.result_timeout_s
                        tr.set(result_key_prefix + f.job_id, f.result_data, px=to_ms(expire))
                    delete_keys += [retry_key_prefix + f.job_id, job_key_prefix + f.job_id]
                    tr.zrem(abort_jobs_ss, f.job_id)
                    tr.zrem(self.queue_name, f.job_id)
                elif f.incr_score:
                    tr.zincrby(self.queue_name, f.incr_score, f.job_id)
                if delete_keys:
                    tr.delete(*delete_keys)
            await tr.execute()
        return [None] * len(finishes)
