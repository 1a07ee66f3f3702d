"""Coalescing: calls made together share one flush, and one statement carries many transitions."""

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.typing import WorkerCoroutine
from arq.worker import Retry, func

from shared import keys, queries
from shared.batching import Coalescer
from shared.jobqueue import EXECUTE_ORDER, QueueWorker, enqueue_order
from shared.models import validate_order
from shared.queries import Move
from tests.conftest import Infra


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail_next = False
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ValueError("boom")
        return [item * 10 for item in items]


async def test_calls_made_together_share_one_flush_and_get_their_own_results() -> None:
    rec = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(rec.flush)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert [len(b) for b in rec.batches] == [50]


async def test_calls_made_while_a_flush_runs_wait_and_go_together() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    coalescer: Coalescer[int, int] = Coalescer(rec.flush, max_in_flight=1, max_batch=4)
    first = asyncio.ensure_future(coalescer.submit(0))
    await rec.started.wait()  # the first flush has started and is held at the gate
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in range(1, 7)]
    for _ in range(5):  # let the later calls (and any flush they could start) run
        await asyncio.sleep(0)  # sleep-ok: yields a loop turn, waits for nothing
    assert rec.batches == [[0]]  # nothing else is sent while one flush is in flight
    rec.gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [10, 20, 30, 40, 50, 60]
    assert rec.batches == [[0], [1, 2, 3, 4], [5, 6]]  # at most max_batch per flush


async def test_a_failed_flush_fails_every_caller_in_it_and_the_next_one_works() -> None:
    rec = Recorder()
    rec.fail_next = True
    coalescer: Coalescer[int, int] = Coalescer(rec.flush)
    outcomes = await asyncio.gather(
        *(coalescer.submit(i) for i in range(3)), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [ValueError] * 3
    assert await coalescer.submit(7) == 70


async def test_a_flush_past_its_timeout_fails_its_callers_and_the_next_one_works() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()  # never set: the first flush hangs, like a lost reply
    coalescer: Coalescer[int, int] = Coalescer(rec.flush, timeout_s=0.05)
    stuck = asyncio.ensure_future(coalescer.submit(1))
    await rec.started.wait()
    waiting = asyncio.ensure_future(coalescer.submit(2))  # behind the stuck flush
    with pytest.raises(TimeoutError):
        await stuck
    rec.gate.set()
    assert await waiting == 20
    assert rec.batches == [[1], [2]]


async def _order(db: asyncpg.Connection) -> uuid.UUID:
    order_id = uuid.uuid4()
    new = validate_order({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5"})
    await queries.insert_order(db, order_id, new)
    return order_id


async def test_one_statement_applies_different_transitions_and_refuses_stale_ones(
    db: asyncpg.Connection,
) -> None:
    a, b, c = await _order(db), await _order(db), await _order(db)
    (run_b,) = await queries.start_runs(db, [b])
    assert run_b is not None
    price = Decimal("187.123456789012345678")
    big = 10**30 + 7  # beyond 64 bits: numbers travel as decimal strings
    moves = [
        Move(a, "routing", 1, {"chosen": "raydium"}, ("pending",), {"quote_price": price}),
        Move(b, "routing", 1, {}, ("pending",), {"min_amount_out": big}, fence=run_b.runs),
        Move(c, "building", 1, {}, ("routing",), {"tx_hash": "x"}),  # c is still pending
        Move(b, "failed", 1, {}, ("pending",), fence=run_b.runs + 1),  # a newer run's fence
    ]
    events = await queries.transition_many(db, moves)

    assert events[0] is not None and events[0]["seq"] == 2 and events[0]["chosen"] == "raydium"
    assert events[1] is not None and events[1]["seq"] == 2 and events[1]["status"] == "routing"
    assert events[2] is None and events[3] is None
    rows = {
        r["id"]: r for r in await db.fetch("SELECT * FROM orders WHERE id = ANY($1)", [a, b, c])
    }
    assert rows[a]["status"] == "routing" and rows[a]["quote_price"] == price
    assert rows[a]["min_amount_out"] is None  # columns a move does not name keep their values
    assert rows[b]["status"] == "routing" and rows[b]["min_amount_out"] == big
    assert rows[c]["status"] == "pending" and rows[c]["tx_hash"] is None
    stored = await db.fetch(
        "SELECT order_id, seq, status, at FROM order_events WHERE seq = 2 ORDER BY order_id"
    )
    assert {(r["order_id"], r["status"]) for r in stored} == {(a, "routing"), (b, "routing")}
    at = {r["order_id"]: r["at"].isoformat().replace("+00:00", "Z") for r in stored}
    assert at[a] == events[0]["at"] and at[b] == events[1]["at"]  # the event says what is stored


async def test_one_run_per_order_per_batch(db: asyncpg.Connection) -> None:
    order_id = await _order(db)
    first, repeat = await queries.start_runs(db, [order_id, order_id])
    assert first is not None and first.runs == 1
    assert repeat is None  # no two runs may share a fencing token


@pytest.mark.parametrize("bad", ["status", "runs; DROP TABLE orders"])
def test_a_move_names_only_updatable_columns(bad: str) -> None:
    with pytest.raises(ValueError, match="not updatable"):
        Move(uuid.uuid4(), "routing", 1, {}, ("pending",), {bad: 1})


def _order_worker(arq: ArqRedis, job: WorkerCoroutine) -> QueueWorker:
    """Our worker running `job` as the order job, three at a time, with a 10 s lease."""
    return QueueWorker(
        functions=[func(job, name=EXECUTE_ORDER)],
        redis_pool=arq,
        queue_name=keys.QUEUE_NAME,
        max_jobs=3,
        keep_result=0,
        handle_signals=False,
        lease_s=10,
    )


async def test_one_poll_claims_the_queued_jobs_behind_running_ones(infra: Infra) -> None:
    arq = await create_pool(RedisSettings.from_dsn(infra.redis_url))
    await arq.flushdb()
    release = asyncio.Event()
    ran: list[str] = []

    async def job(ctx: dict[str, Any], order_id: str) -> None:
        await release.wait()
        ran.append(order_id)

    worker = _order_worker(arq, job)
    ids = [f"job-{i}" for i in range(6)]
    for job_id in ids:
        assert await enqueue_order(arq, job_id)
    for job_id in ids[:2]:  # running in some other worker (they stay in the queue till done)
        await arq.set(in_progress_key_prefix + job_id, b"1")
    try:
        await worker.start_jobs([job_id.encode() for job_id in ids])
        assert sorted(worker.tasks) == ids[2:5]  # three free slots: the first three not running
        assert 0 < await arq.pttl(in_progress_key_prefix + ids[2]) <= 10_000  # the lease
        release.set()
        await asyncio.gather(*worker.tasks.values())
        assert sorted(ran) == ids[2:5]
        assert not await arq.exists(*(in_progress_key_prefix + j for j in ids[2:5]))
    finally:
        await arq.flushdb()
        await worker.close()


async def test_jobs_that_end_together_are_finished_in_one_transaction(infra: Infra) -> None:
    """Three jobs end at once, one of them asking to be retried: one MULTI/EXEC finishes all
    three as arq would have one by one."""
    arq = await create_pool(RedisSettings.from_dsn(infra.redis_url))
    await arq.flushdb()
    release, all_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def job(ctx: dict[str, Any], order_id: str) -> None:
        started.append(order_id)  # arq's own start-up round trip for this job is done
        if len(started) == 3:
            all_started.set()
        await release.wait()
        if order_id == "job-again":
            raise Retry(defer=60)

    worker = _order_worker(arq, job)
    ids = ["job-a", "job-b", "job-again"]
    for job_id in ids:
        assert await enqueue_order(arq, job_id)
    try:
        await worker.start_jobs([job_id.encode() for job_id in ids])
        assert sorted(worker.tasks) == sorted(ids)
        async with asyncio.timeout(10):
            await all_started.wait()
        before = (await arq.info("commandstats"))["cmdstat_exec"]["calls"]
        score = await arq.zscore(keys.QUEUE_NAME, "job-again")
        release.set()
        await asyncio.gather(*worker.tasks.values())
        assert (await arq.info("commandstats"))["cmdstat_exec"]["calls"] == before + 1
        for done in ("job-a", "job-b"):
            assert await arq.zscore(keys.QUEUE_NAME, done) is None
            assert not await arq.exists(
                in_progress_key_prefix + done, job_key_prefix + done, retry_key_prefix + done
            )
        assert await arq.zscore(keys.QUEUE_NAME, "job-again") >= score + 60_000  # re-queued
        assert await arq.exists(job_key_prefix + "job-again")
        assert not await arq.exists(in_progress_key_prefix + "job-again")
    finally:
        await arq.flushdb()
        await worker.close()
