"""arq's worker with a one-round-trip job claim that starts the job's lease.

arq claims each job it read from the queue on its own, in four round trips (WATCH, EXISTS,
ZSCORE, MULTI/PSETEX/EXEC), one job after another. This claims every job of a poll that a free
slot can take in one Lua script with the same checks (not already running, still queued, due),
and gives the in-progress mark the short renewable lease of `worker.jobs.job_lease` at once,
instead of arq's whole job timeout.
"""

from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.commands.core import AsyncScript

# KEYS: the queue. ARGV: now ms, lease ms, in-progress key prefix, job ids...
# Returns, per job id, its score if this call claimed it, else 0.
_CLAIM = """
local out = {}
for i = 4, #ARGV do
    local id = ARGV[i]
    local mark = ARGV[3] .. id
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score and tonumber(score) <= tonumber(ARGV[1]) and redis.call('EXISTS', mark) == 0 then
        redis.call('PSETEX', mark, ARGV[2], '1')
        out[#out + 1] = score
    else
        out[#out + 1] = 0
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
        # Wait for one free slot, as arq does, then take whatever else is free right now; jobs
        # left over stay queued for the next poll.
        await self.sem.acquire()
        taken = 1
        while taken < len(job_ids) and not self.sem.locked():
            await self.sem.acquire()
            taken += 1
        free = max(self.max_jobs - self.job_counter, 0)
        for _ in range(taken - min(taken, free)):
            self.sem.release()
        ids = [job_id.decode() for job_id in job_ids[: min(taken, free)]]
        if not ids:
            return
        self.job_counter += len(ids)
        try:
            if self._claim is None:
                self._claim = self.pool.register_script(_CLAIM)
            scores = await self._claim(
                keys=[self.queue_name],
                args=[timestamp_ms(), self.lease_ms, in_progress_key_prefix, *ids],
            )
        except BaseException:
            self._release(len(ids))
            raise
        for job_id, score in zip(ids, scores, strict=True):
            if not score:  # running elsewhere, finished, or deferred again meanwhile
                self._release(1)
                continue
            task = self.loop.create_task(self.run_job(job_id, int(score)))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    def _release(self, n: int) -> None:
        self.job_counter -= n
        for _ in range(n):
            self.sem.release()
