"""Contract with arq (pinned in pyproject.toml): what `shared.jobqueue` relies on still holds.

If an arq upgrade changes its storage format, its finish, the claim's in-progress mark or the
worker's slot accounting, one of these fails: a job queued by stock arq runs on our worker and
one queued by us runs on stock arq's; after a run (done, or retried) our keys are stock arq's;
the claim marks a job for our lease; and a job that is stopped mid-run gives its slot back.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq import Retry
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import deserialize_job
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func

from shared import keys
from shared.jobqueue import EXECUTE_ORDER, JobQueue, QueueWorker, enqueue_order
from tests.conftest import Infra


@pytest.fixture
async def arq(infra: Infra) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(infra.redis_url))
    await pool.flushdb()
    yield pool
    await pool.flushdb()
    await pool.aclose()


def _ours(
    arq: ArqRedis, job: WorkerCoroutine, lease_s: float = 10, max_jobs: int = 3
) -> QueueWorker:
    return QueueWorker(
        functions=[func(job, name=EXECUTE_ORDER, keep_result=0)],
        redis_pool=arq,
        queue_name=keys.QUEUE_NAME,
        max_jobs=max_jobs,
        keep_result=0,
        poll_delay=0.01,
        handle_signals=False,
        lease_s=lease_s,
    )


def _stock(arq: ArqRedis, job: WorkerCoroutine) -> Worker:
    return Worker(
        functions=[func(job, name=EXECUTE_ORDER, keep_result=0)],
        redis_pool=arq,
        queue_name=keys.QUEUE_NAME,
        keep_result=0,
        poll_delay=0.01,
        handle_signals=False,
    )


async def _run_until_idle(worker: Worker, jobs: int = 1) -> None:
    """Run the worker (burst mode) until it has run `jobs` jobs and none is running."""
    worker.burst, worker.max_burst_jobs = True, jobs
    async with asyncio.timeout(20):
        await worker.async_run()


async def _stock_enqueue(arq: ArqRedis, job_id: str) -> None:
    job = await arq.enqueue_job(EXECUTE_ORDER, job_id, _job_id=job_id, _queue_name=keys.QUEUE_NAME)
    assert job is not None


async def _job_keys(arq: ArqRedis, job_id: str) -> dict[str, Any]:
    """Every key that names the job, with the id replaced, its type and whether it expires;
    and the job's place in the queue."""
    found: dict[str, Any] = {}
    async for raw in arq.scan_iter(match=f"*:{job_id}"):
        key = raw.decode()
        ttl = await arq.pttl(key)
        found[key.removesuffix(job_id) + "<id>"] = ((await arq.type(key)).decode(), ttl > 0)
    found["queued"] = await arq.zscore(keys.QUEUE_NAME, job_id) is not None
    return found


async def test_a_job_queued_by_stock_arq_runs_on_our_worker(arq: ArqRedis) -> None:
    ran: list[str] = []

    async def job(ctx: dict[str, Any], order_id: str) -> None:
        async with ctx["lease"](ctx["job_id"]):
            ran.append(order_id)

    await _stock_enqueue(arq, "stock-queued")
    worker = _ours(arq, job)
    try:
        await _run_until_idle(worker)
    finally:
        await worker.close()
    assert ran == ["stock-queued"]
    assert worker.jobs_complete == 1 and worker.jobs_failed == 0


async def test_a_job_queued_by_us_runs_on_stock_arqs_worker(arq: ArqRedis) -> None:
    ran: list[str] = []

    async def job(ctx: dict[str, Any], order_id: str) -> None:
        ran.append(order_id)

    assert await enqueue_order(arq, "ours-queued")
    assert not await enqueue_order(arq, "ours-queued")  # one job per order id, as arq's
    worker = _stock(arq, job)
    try:
        await _run_until_idle(worker)
    finally:
        await worker.close()
    assert ran == ["ours-queued"]
    assert worker.jobs_complete == 1 and worker.jobs_failed == 0


async def test_our_queued_job_is_stored_as_stock_arq_stores_it(arq: ArqRedis) -> None:
    await _stock_enqueue(arq, "job-stock")
    assert await enqueue_order(arq, "job-ours")
    stock, ours = (
        await arq.get(job_key_prefix + "job-stock"),
        await arq.get(job_key_prefix + "job-ours"),
    )
    assert stock is not None and ours is not None
    stock_job, our_job = deserialize_job(stock), deserialize_job(ours)
    assert (our_job.function, our_job.args, our_job.kwargs, our_job.job_try) == (
        stock_job.function,
        ("job-ours",),
        stock_job.kwargs,
        stock_job.job_try,
    )
    assert stock_job.args == ("job-stock",)
    assert await _job_keys(arq, "job-stock") == await _job_keys(arq, "job-ours")
    # Both expire the stored job a day (arq's expires_extra_ms) after it is due.
    assert (
        abs(
            await arq.pttl(job_key_prefix + "job-stock")
            - await arq.pttl(job_key_prefix + "job-ours")
        )
        < 5000
    )
    assert await JobQueue(arq).depth() == 2


@pytest.mark.parametrize("outcome", ["done", "retried", "failed"])
async def test_after_a_run_our_keys_are_stock_arqs(arq: ArqRedis, outcome: str) -> None:
    async def job(ctx: dict[str, Any], order_id: str) -> None:
        if outcome == "retried":
            raise Retry(defer=60)
        if outcome == "failed":
            raise ValueError("the job's own error")

    await _stock_enqueue(arq, "stock-run")
    stock = _stock(arq, job)
    try:
        await _run_until_idle(stock)
    finally:
        await stock.close()
    assert await enqueue_order(arq, "our-run")
    ours = _ours(arq, job)
    try:
        await _run_until_idle(ours)
    finally:
        await ours.close()
    assert await _job_keys(arq, "our-run") == await _job_keys(arq, "stock-run")
    assert (ours.jobs_complete, ours.jobs_retried, ours.jobs_failed) == (
        stock.jobs_complete,
        stock.jobs_retried,
        stock.jobs_failed,
    )
    expected: dict[str, Any] = {"queued": False}  # nothing left behind
    if outcome == "retried":  # still queued, its tries counted, not in progress
        expected = {"arq:job:<id>": ("string", True), "arq:retry:<id>": ("string", True)}
        expected["queued"] = True
    assert await _job_keys(arq, "our-run") == expected


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)  # sleep-ok: polling the worker's own state


async def test_the_claim_marks_a_job_for_the_lease_and_the_job_renews_it(arq: ArqRedis) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    marked_ms: list[int] = []

    async def job(ctx: dict[str, Any], order_id: str) -> None:
        marked_ms.append(await ctx["redis"].pttl(in_progress_key_prefix + order_id))
        async with ctx["lease"](ctx["job_id"]):
            started.set()
            await release.wait()

    assert await enqueue_order(arq, "leased")
    worker = _ours(arq, job, lease_s=1.0)
    task = asyncio.create_task(worker.async_run())
    try:
        async with asyncio.timeout(10):
            await started.wait()
        # As claimed, before the job renewed anything: arq would mark it for the job's
        # timeout + 10 s; ours is the lease.
        assert 0 < marked_ms[0] <= 1000, marked_ms
        await asyncio.sleep(2.5)  # sleep-ok: outlive the first lease twice over
        assert 0 < await arq.pttl(in_progress_key_prefix + "leased") <= 1000, "not renewed"
        assert worker.running("leased")
        release.set()
        await _wait_for(lambda: worker.jobs_complete == 1)
    finally:
        release.set()
        worker.burst, worker.max_burst_jobs = True, 0
        await task
        await worker.close()
    assert not await arq.exists(in_progress_key_prefix + "leased")


async def test_a_job_stopped_mid_run_gives_its_slot_back(arq: ArqRedis) -> None:
    """Two ways a run ends early: its lease is lost (here its mark is deleted, as if it had
    expired and another worker had taken it) or it fails. Either way the worker's free slots
    return to full, and it goes on taking jobs."""
    started: dict[str, asyncio.Event] = {i: asyncio.Event() for i in ("lost", "fails", "next")}
    cancelled: list[str] = []
    runs: list[str] = []

    async def job(ctx: dict[str, Any], order_id: str) -> None:
        runs.append(order_id)
        async with ctx["lease"](ctx["job_id"]):
            started[order_id].set()
            if order_id == "fails":
                raise ValueError("the job's own error")
            if order_id == "lost" and runs.count("lost") == 1:
                try:  # the first run of "lost" runs until it is stopped; its re-run ends
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.append(order_id)
                    raise

    worker = _ours(arq, job, lease_s=0.8, max_jobs=2)
    task = asyncio.create_task(worker.async_run())
    try:
        assert worker.free_slots == 2
        for job_id in ("lost", "fails"):
            assert await enqueue_order(arq, job_id)
        async with asyncio.timeout(10):
            await started["lost"].wait()
            await started["fails"].wait()
        await arq.delete(in_progress_key_prefix + "lost")
        # Stopped, then (its job still queued: the lost run finished nothing) run again.
        await _wait_for(lambda: runs.count("lost") == 2)
        await _wait_for(lambda: worker.free_slots == 2 and not worker.tasks)
        assert cancelled == ["lost"]
        assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 1, 1)
        assert await enqueue_order(arq, "next")
        async with asyncio.timeout(10):
            await started["next"].wait()
        await _wait_for(lambda: worker.free_slots == 2 and not worker.tasks)
    finally:
        worker.burst, worker.max_burst_jobs = True, 0
        for running in worker.tasks.values():  # only if the test failed half-way
            running.cancel()
        await task
        await worker.close()


async def test_a_worker_never_starts_a_job_it_is_already_running(arq: ArqRedis) -> None:
    """After a Redis stall the in-progress mark of a job still running here may have lapsed:
    the job is due in the queue and unmarked, yet this worker must not start it again."""
    runs: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def job(ctx: dict[str, Any], order_id: str) -> None:
        runs.append(order_id)
        started.set()
        await release.wait()

    assert await enqueue_order(arq, "running")
    worker = _ours(arq, job, lease_s=30)
    task = asyncio.create_task(worker.async_run())
    try:
        async with asyncio.timeout(10):
            await started.wait()
        await arq.delete(in_progress_key_prefix + "running")  # the mark lapsed
        await worker.start_jobs([b"running"])  # what the next poll does
        assert runs == ["running"] and worker.free_slots == 2
        release.set()
        await _wait_for(lambda: worker.jobs_complete == 1)
    finally:
        release.set()
        worker.burst, worker.max_burst_jobs = True, 0
        await task
        await worker.close()
    assert runs == ["running"]
