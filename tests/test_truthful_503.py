"""A 503 tells the truth and nothing hangs, with a client submitting steadily while PostgreSQL or
Valkey is frozen (SIGSTOP: connections accepted, nothing answered).

Every answer comes within the dependency's timeout plus a small margin. An order answered with
`SERVICE_UNAVAILABLE` never exists, not even after the server resumes and the sweeper has run;
one answered with `ORDER_OUTCOME_UNKNOWN` is settled for good once the server is back (404, or
an order that executes), and a retry with its Idempotency-Key gets the same answer as a lookup.
Every order that exists reaches a terminal status and executes at most once.
"""

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.procs import (
    Deployment,
    assert_executed_once,
    assert_gapless,
    deployment,
    frozen,
    server_pids,
    wait_healthy,
    wait_order_terminal,
)

pytestmark = pytest.mark.chaos

TIMEOUT_S = 2.0  # DB_TIMEOUT_S and REDIS_TIMEOUT_S in these deployments
MARGIN_S = 0.5
RECOVER_WITHIN_S = 2.0
SUBMIT_EVERY_S = 0.2  # a client at ~5 orders/s
OUTAGE_S = 8.0
CALM_S = 2.0  # the client submits this long before the freeze and after the server resumes


@dataclass
class Answer:
    client_order_id: str
    idempotency_key: str | None
    body: dict[str, Any]
    status: int | None  # None: the client gave up (no answer within its own timeout)
    json: dict[str, Any]
    sent_at: float
    elapsed_s: float


async def _submit(http: httpx.AsyncClient, i: int) -> Answer:
    cid = f"c-{i}-{uuid.uuid4().hex[:8]}"
    key = f"k-{cid}" if i % 2 else None  # half the client's orders carry an Idempotency-Key
    body = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.5", "clientOrderId": cid}
    headers = {"Idempotency-Key": key} if key else {}
    started = time.monotonic()
    try:
        response = await http.post("/api/orders/execute", json=body, headers=headers)
    except httpx.TimeoutException:
        return Answer(cid, key, body, None, {}, started, time.monotonic() - started)
    elapsed_s = time.monotonic() - started
    return Answer(cid, key, body, response.status_code, response.json(), started, elapsed_s)


async def _steady_client(http: httpx.AsyncClient, stop: asyncio.Event) -> list[Answer]:
    """POST every SUBMIT_EVERY_S, each request on its own, until `stop`; every answer."""
    tasks: list[asyncio.Task[Answer]] = []
    i = 0
    while not stop.is_set():
        tasks.append(asyncio.create_task(_submit(http, i)))
        i += 1
        try:  # paced by the clock, not by the answers: a hung server must not slow the client
            await asyncio.wait_for(stop.wait(), SUBMIT_EVERY_S)
        except TimeoutError:
            pass
    return list(await asyncio.gather(*tasks))


@dataclass
class Outcome:
    answers: list[Answer]
    rows: dict[str, asyncpg.Record]  # client_order_id → order row, for every order that exists
    back_at: float  # when the server was back (monotonic)
    # The simulated cluster keeps its ledger in Redis: after "redis-lost" only the swaps of
    # orders created since can be counted (a real chain does not forget).
    ledger_since: datetime | None

    def recovery_s(self) -> float:
        """From the server's return to the first order accepted after it."""
        firsts = [a.sent_at + a.elapsed_s for a in self.answers if a.status == 200]
        return min(t for t in firsts if t >= self.back_at) - self.back_at


async def _outage(d: Deployment, fault: str) -> float:
    """Inflict `fault` for OUTAGE_S; returns the moment (monotonic) the server is back."""
    servers = d.servers
    if fault.endswith("frozen"):
        with frozen(server_pids(servers, fault.split("-")[0])):
            await asyncio.sleep(OUTAGE_S)  # sleep-ok: the outage's length is the experiment
        return time.monotonic()
    server = servers.pg if fault.startswith("postgres") else servers.valkey
    await asyncio.to_thread(server.stop if fault.endswith("stopped") else server.kill)
    await asyncio.sleep(OUTAGE_S)  # sleep-ok: the outage's length is the experiment
    if fault == "redis-lost":  # killed with no append-only file to come back from
        shutil.rmtree(servers.valkey.data_dir / "appendonlydir")
    await asyncio.to_thread(server.start)
    return time.monotonic()


async def _run_through(d: Deployment, fault: str) -> Outcome:
    api = await d.start_api()
    await d.start_worker()
    client_timeout_s = TIMEOUT_S + MARGIN_S + 1  # long enough to tell "slow" from "hung"
    async with httpx.AsyncClient(base_url=api.base_url, timeout=client_timeout_s) as http:
        stop = asyncio.Event()
        client = asyncio.create_task(_steady_client(http, stop))
        await _calm()
        back_at = await _outage(d, fault)
        ledger_since = datetime.now(UTC) if fault == "redis-lost" else None
        await _calm()
        stop.set()
        answers = await client
    await wait_healthy(api)
    rows = await _settle(d, answers)
    return Outcome(answers, rows, back_at, ledger_since)


async def _calm() -> None:
    await asyncio.sleep(CALM_S)  # sleep-ok: the client keeps submitting through this window


async def _settle(d: Deployment, answers: list[Answer]) -> dict[str, asyncpg.Record]:
    """Wait until every order that exists is terminal, then once more until the sweeper has
    looked at the database again (it is what would resurrect a hidden order); every row."""
    conn = await asyncpg.connect(d.servers.database_url)
    try:
        for row in await conn.fetch("SELECT id FROM orders"):
            await wait_order_terminal(d.servers.database_url, str(row["id"]), 60)
        await _one_more_sweep(conn)
        rows = await conn.fetch("SELECT * FROM orders")
    finally:
        await conn.close()
    return {r["client_order_id"]: r for r in rows}


async def _one_more_sweep(conn: asyncpg.Connection) -> None:
    """Wait for proof of a sweep pass that started after now: the sweeper deletes expired
    idempotency keys on every pass, so a key backdated past its lifetime disappears."""
    key = f"sweep-probe-{uuid.uuid4()}"
    await conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, created_at)"
        " VALUES ($1, 'x', now() - interval '2 days')",
        key,
    )
    deadline = time.monotonic() + 30
    while await conn.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key):
        assert time.monotonic() < deadline, "the sweeper did not run within 30 s"
        await asyncio.sleep(0.1)  # sleep-ok: polling the database for the sweeper's pass


async def _check(d: Deployment, outcome: Outcome, api_base: str) -> dict[str, int]:
    """Every rule of the module doc; returns the tally for the report."""
    answers, rows = outcome.answers, outcome.rows
    slowest = max(a.elapsed_s for a in answers)
    hung = [a for a in answers if a.status is None]
    assert not hung, f"{len(hung)} requests got no answer within the client's timeout"
    assert slowest <= TIMEOUT_S + MARGIN_S, f"slowest answer {slowest:.2f} s"
    codes = {a.json.get("code") for a in answers if a.status != 200}
    assert codes <= {"SERVICE_UNAVAILABLE", "ORDER_OUTCOME_UNKNOWN"}, codes
    tally = {"submitted": len(answers), "accepted": 0, "unavailable": 0, "unknown": 0}
    redis = Redis.from_url(d.servers.redis_url)
    conn = await asyncpg.connect(d.servers.database_url)
    try:
        async with httpx.AsyncClient(base_url=api_base, timeout=10) as http:
            for a in answers:
                row = rows.get(a.client_order_id)
                if a.status == 200:
                    tally["accepted"] += 1
                    assert row is not None and str(row["id"]) == a.json["orderId"], a
                elif a.json["code"] == "SERVICE_UNAVAILABLE":
                    tally["unavailable"] += 1
                    assert row is None, f"a 503 order exists: {a.client_order_id} ({row})"
                else:
                    tally["unknown"] += 1
                    await _resolve_unknown(http, a, row)
        for row in rows.values():
            assert row["status"] in ("confirmed", "failed"), (row["id"], row["status"])
            if outcome.ledger_since is None or row["created_at"] > outcome.ledger_since:
                await assert_executed_once(conn, redis, row["id"])
        await assert_gapless(conn)
    finally:
        await conn.close()
        await redis.aclose()
    tally["terminal"] = len(rows)
    return tally


async def _resolve_unknown(http: httpx.AsyncClient, a: Answer, row: asyncpg.Record | None) -> None:
    """An unknown outcome names its order, and once the server is back that order's fate is
    one thing for good: the lookup and an idempotent retry agree with the database."""
    order_id = a.json["orderId"]
    assert a.json["details"][0]["orderId"] == order_id
    lookup = await http.get(f"/api/orders/{order_id}")
    if row is None:
        assert lookup.status_code == 404, lookup.text
    else:
        assert str(row["id"]) == order_id and lookup.status_code == 200, lookup.text
    if a.idempotency_key is not None:
        retry = await http.post(
            "/api/orders/execute", json=a.body, headers={"Idempotency-Key": a.idempotency_key}
        )
        assert retry.status_code == 200, retry.text
        assert (retry.json()["orderId"] == order_id) == (row is not None), (retry.json(), row)


@pytest.fixture
async def freeze_deployment() -> AsyncIterator[Deployment]:
    # Durable PostgreSQL: "killed" must not lose commits it acknowledged, as in production.
    async with deployment(
        durable=True,
        DB_TIMEOUT_S=str(TIMEOUT_S),
        REDIS_TIMEOUT_S=str(TIMEOUT_S),
        SIM_LATENCY_SCALE="0.05",
    ) as d:
        yield d


@pytest.mark.parametrize(
    "fault",
    [
        "postgres-frozen",
        "redis-frozen",
        "postgres-stopped",
        "postgres-killed",
        "redis-killed",
        "redis-lost",
    ],
)
async def test_steady_client_through_an_outage(
    freeze_deployment: Deployment, fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = freeze_deployment
    outcome = await _run_through(d, fault)
    api = d.procs[0]
    tally = await _check(d, outcome, api.base_url)
    slowest = max(a.elapsed_s for a in outcome.answers)
    recovery_s = outcome.recovery_s()
    with capsys.disabled():
        print(
            f"\n{fault} {OUTAGE_S:.0f} s: {tally}, slowest answer {slowest:.2f} s,"
            f" first order accepted {recovery_s:.2f} s after the server was back"
        )
    assert tally["accepted"] >= CALM_S / SUBMIT_EVERY_S, tally  # it worked around the outage
    assert tally["unavailable"] + tally["unknown"] > 0, "the outage was never noticed"
    assert recovery_s <= RECOVER_WITHIN_S, recovery_s
