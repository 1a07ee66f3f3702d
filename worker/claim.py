"""arq's worker with a one-round-trip job claim that starts the job's lease.

arq claims each job it read from the queue on its own, in four round trips (WATCH, EXISTS,
ZSCORE, MULTI/PSETEX/EXEC), one job after another. This claims as many of a poll's jobs as there
are free slots in one Lua script with the same checks (not already running, still queued, due),
and gives the in-progress mark the short renewable lease of `worker.jobs.job_lease` at once,
instead of arq's whole job timeout.
"""

from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.commands.core import AsyncScript

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


class OrderWorker(Worker):
    """`arq.worker.Worker` whose job claim is one script per poll (see the module doc)."""

    def __init__(self, *args: Any, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_ms = int(lease_s * 1000)
        self._claim: AsyncScript | None = None

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
