"""arq's worker with a one-round-trip job claim that starts the job's lease, and job finishes
coalesced into one transaction.

arq claims each job it read from the queue on its own, in four round trips (WATCH, EXISTS,
ZSCORE, MULTI/PSETEX/EXEC), one job after another. This claims as many of a poll's jobs as there
are free slots in one Lua script with the same checks (not already running, still queued, due),
and gives the in-progress mark the short renewable lease of `worker.jobs.job_lease` at once,
instead of arq's whole job timeout.

arq also ends every job that ran with its own MULTI/EXEC round trip. Here the jobs that end while
the previous finish is in flight share the next one: the same commands, for all of them, in one
MULTI/EXEC (`shared.batching.Coalescer`). If that fails, every job in it hears so, as each would
have alone; arq's `finish_failed_job` (a job that never ran: expired, unknown, out of tries)
still has its own.
"""

from dataclasses import dataclass
from typing import Any

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms, to_ms
from arq.worker import Worker
from redis.commands.core import AsyncScript

from shared.batching import Coalescer

# A finish that takes longer fails instead of holding every later finish, and so every job slot,
# behind it: the error (a TimeoutError, an OSError) ends arq's poll loop, and `worker.__main__`
# starts the worker again as after a lost Redis. Its commands are safe to leave half-sent: the
# job's lease expires and the order's run is fenced in PostgreSQL.
FINISH_TIMEOUT_S = 10.0

# KEYS: the queue. ARGV: now ms, lease ms, in-progress key prefix, at most how many to claim,
# job ids in queue order (running jobs stay in the queue until they finish: skip them).
# Returns the claimed jobs as a flat list: id, score, id, score...
_CLAIM = """
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
"""


@dataclass(frozen=True, slots=True)
class _Finish:
    """The arguments of `arq.worker.Worker.finish_job`."""

    job_id: str
    finish: bool
    result_data: bytes | None
    result_timeout_s: float | None
    keep_result_forever: bool
    incr_score: int | None
    keep_in_progress: float | None


class OrderWorker(Worker):
    """`arq.worker.Worker` whose job claim is one script per poll and whose job finishes are
    coalesced (see the module doc)."""

    def __init__(self, *args: Any, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_ms = int(lease_s * 1000)
        self._claim: AsyncScript | None = None
        self._finishes: Coalescer[_Finish, None] = Coalescer(
            self._finish_many, timeout_s=FINISH_TIMEOUT_S
        )

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
        await self._finishes.submit(
            _Finish(
                job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score,
                keep_in_progress,
            )
        )  # fmt: skip

    async def _finish_many(self, finishes: list[_Finish]) -> list[None]:
        """arq's `finish_job`, command for command, for every job in one MULTI/EXEC."""
        async with self.pool.pipeline(transaction=True) as tr:
            for f in finishes:
                in_progress_key = in_progress_key_prefix + f.job_id
                delete_keys = []
                if f.keep_in_progress is None:
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

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        if not job_ids:
            return
        # Wait for one free slot, as arq does, then take whatever else is free right now.
        await self.sem.acquire()
        taken = 1
        while taken < len(job_ids) and not self.sem.locked():
            await self.sem.acquire()
            taken += 1
        slots = min(taken, max(self.max_jobs - self.job_counter, 0))
        for _ in range(taken - slots):
            self.sem.release()
        if not slots:
            return
        self.job_counter += slots
        try:
            if self._claim is None:
                self._claim = self.pool.register_script(_CLAIM)
            claimed = await self._claim(
                keys=[self.queue_name],
                args=[timestamp_ms(), self.lease_ms, in_progress_key_prefix, slots, *job_ids],
            )
        except BaseException:
            self._release(slots)
            raise
        self._release(slots - len(claimed) // 2)  # fewer jobs were free to claim than slots
        for job_id, score in zip(claimed[::2], claimed[1::2], strict=True):
            job = job_id.decode()
            task = self.loop.create_task(self.run_job(job, int(score)))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job] = task

    def _release(self, n: int) -> None:
        self.job_counter -= n
        for _ in range(n):
            self.sem.release()
