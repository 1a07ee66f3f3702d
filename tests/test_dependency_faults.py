"""Issue 19, findings 7 and 8: orders in flight when a dependency stalls or dies.

- Valkey frozen (SIGSTOP) for longer than the job lease: no worker runs an order twice at once
  (no run is fenced off in PostgreSQL, arq logs no error), and every order ends exactly once.
- PostgreSQL stopped or frozen with orders in flight: once it is back the orders finish within
  seconds, retried by the queue, not found later by the sweeper.
- A worker killed after `routing` and before `building` (nothing was sent): the order's next
  run makes the same attempt again instead of spending a new one.

Every process is real (`tests/procs.py`): the API, the workers, PostgreSQL and Valkey.
"""

import asyncio
import time
import uuid

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.procs import (
    TERMINAL,
    Deployment,
    assert_executed_once,
    assert_gapless,
    deployment,
    frozen,
    server_pids,
    submit,
    total_swaps_landed,
    wait_order_terminal,
    wait_submitted,
)

pytestmark = pytest.mark.chaos

LEASE_S = 2.0
RESUME_WITHIN_S = 5.0  # issue 19: in-flight orders resume within a few seconds of the return
# What a second, fenced-off run of the same order logs (`worker.pipeline.OrderRun.move`).
FENCED_RUN = "the order moved on elsewhere"


async def _statuses(database_url: str, ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, status FROM orders WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]
        )
    finally:
        await conn.close()
    return {str(r["id"]): r["status"] for r in rows}


async def _wait_all_terminal(database_url: str, ids: list[str], timeout_s: float) -> float:
    """Poll PostgreSQL until every order is terminal; the time that took."""
    started = time.monotonic()
    while True:
        try:
            statuses = await _statuses(database_url, ids)
        except (OSError, asyncpg.PostgresError):  # the server is still starting
            statuses = {}
        if len(statuses) == len(ids) and set(statuses.values()) <= TERMINAL:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"not terminal in {timeout_s} s: {statuses}"
        await asyncio.sleep(0.05)  # sleep-ok: polling the source of truth with a deadline


async def _check_books(d: Deployment, ids: list[str]) -> tuple[int, int]:
    """Each order executed at most once (one landing per confirmed order, none for a failed
    one), gapless events, and the cluster's own count of swaps equal to the confirmed orders.
    Returns (confirmed, failed)."""
    conn = await asyncpg.connect(d.servers.database_url)
    redis = Redis.from_url(d.servers.redis_url)
    try:
        for order_id in ids:
            await assert_executed_once(conn, redis, order_id)
            await assert_gapless(conn, order_id)
        rows = await conn.fetch("SELECT status, count(*) AS n FROM orders GROUP BY status")
        counts = {r["status"]: r["n"] for r in rows}
        confirmed = int(counts.get("confirmed", 0))
        assert await total_swaps_landed(redis) == (confirmed, confirmed)
        return confirmed, int(counts.get("failed", 0))
    finally:
        await redis.aclose()
        await conn.close()


async def _submit_many(http: httpx.AsyncClient, n: int) -> list[str]:
    return [(await submit(http, amount=f"0.{i + 1:02d}3"))["orderId"] for i in range(n)]


def _assert_clean_logs(d: Deployment) -> None:
    logs = d.worker_logs()
    for bad in ("KeyError", "Traceback", FENCED_RUN):
        assert bad not in logs, f"{bad!r} in the worker logs:\n{logs}"


@pytest.mark.timeout(120)
async def test_valkey_frozen_past_the_lease_runs_no_order_twice_at_once() -> None:
    orders = 10
    async with deployment(SIM_LATENCY_SCALE="1.0", JOB_LEASE_S=str(LEASE_S)) as d:
        api = await d.start_api()
        workers = [await d.start_worker(), await d.start_worker()]
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            ids = await _submit_many(http, orders)
            await wait_submitted(f"{api.ws_base}/api/orders/execute?orderId={ids[0]}")
            before = await _statuses(d.servers.database_url, ids)
            in_flight = sum(s not in TERMINAL for s in before.values())
            assert in_flight >= 3, before
            with frozen(server_pids(d.servers, "redis")):
                # Three leases: every running job's lease expires while Valkey is frozen.
                await asyncio.sleep(3 * LEASE_S)  # sleep-ok: the length of the freeze
            recovery_s = await _wait_all_terminal(d.servers.database_url, ids, 60)
        confirmed, failed = await _check_books(d, ids)
        assert all(w.alive() for w in workers), d.worker_logs()
        _assert_clean_logs(d)
        assert confirmed == orders, (confirmed, failed)
    print(
        f"\nValkey frozen {3 * LEASE_S:.0f} s: {orders} orders, {in_flight} in flight,"
        f" {confirmed} confirmed, {failed} failed, 0 lost, 0 double;"
        f" all terminal {recovery_s:.1f} s after SIGCONT"
    )


@pytest.mark.timeout(120)
async def test_orders_in_flight_resume_within_seconds_of_valkey_restarting() -> None:
    """Valkey shut down (its append-only file flushed) and started again 10 s later: the worker
    process survives, and the orders finish within seconds, not at the sweeper's next look."""
    orders, outage_s = 8, 10.0
    async with deployment(SIM_LATENCY_SCALE="0.5", STALE_ORDER_S="60") as d:
        api = await d.start_api()
        worker = await d.start_worker()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            ids = await _submit_many(http, orders)
            await wait_submitted(f"{api.ws_base}/api/orders/execute?orderId={ids[0]}")
            before = await _statuses(d.servers.database_url, ids)
            in_flight = sum(s not in TERMINAL for s in before.values())
            assert in_flight >= 3, before
            await asyncio.to_thread(d.servers.valkey.stop)
            await asyncio.sleep(outage_s)  # sleep-ok: the length of the outage
            await asyncio.to_thread(d.servers.valkey.start)
            recovery_s = await _wait_all_terminal(d.servers.database_url, ids, 60)
            assert worker.alive(), worker.log()
        confirmed, failed = await _check_books(d, ids)
        assert confirmed == orders, (confirmed, failed)
    print(
        f"\nValkey stopped {outage_s:.0f} s: {orders} orders, {in_flight} in flight,"
        f" {confirmed} confirmed, {failed} failed, 0 lost, 0 double;"
        f" all terminal {recovery_s:.1f} s after it was back"
    )
    assert recovery_s <= RESUME_WITHIN_S, f"orders resumed {recovery_s:.1f} s after Valkey"


async def _postgres_outage(d: Deployment, how: str, outage_s: float) -> None:
    if how == "stopped":
        # A fast shutdown (connections cut, open transactions rolled back). Not SIGKILL: these
        # servers run without synchronous commit, so a kill could lose commits already
        # acknowledged (a `building` row whose transaction was then sent), which no
        # production server configured for durability does.
        await asyncio.to_thread(d.servers.pg.stop)
        await asyncio.sleep(outage_s)  # sleep-ok: the length of the outage
        await asyncio.to_thread(d.servers.restart_postgres)
    else:
        with frozen(server_pids(d.servers, "postgres")):
            await asyncio.sleep(outage_s)  # sleep-ok: the length of the outage


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", ["stopped", "frozen"])
async def test_orders_in_flight_resume_within_seconds_of_postgres_returning(how: str) -> None:
    """The sweeper is told to wait a minute, so only the queue's own retry can finish them."""
    orders, outage_s = 8, 12.0
    async with deployment(SIM_LATENCY_SCALE="0.5", STALE_ORDER_S="60") as d:
        api = await d.start_api()
        worker = await d.start_worker()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            ids = await _submit_many(http, orders)
            await wait_submitted(f"{api.ws_base}/api/orders/execute?orderId={ids[0]}")
            before = await _statuses(d.servers.database_url, ids)
            in_flight = sum(s not in TERMINAL for s in before.values())
            assert in_flight >= 3, before
            await _postgres_outage(d, how, outage_s)
            recovery_s = await _wait_all_terminal(d.servers.database_url, ids, 60)
            assert worker.alive(), worker.log()
            # The worker took no restart to get here, and takes new orders as before.
            new = await submit(http, amount="0.77")
            row = await wait_order_terminal(d.servers.database_url, new["orderId"], 20)
            assert row["status"] == "confirmed", (row["error_code"], row["last_error"])
        confirmed, failed = await _check_books(d, [*ids, new["orderId"]])
        assert confirmed == orders + 1, (confirmed, failed)
        # No job failed (arq logs a failed job at ERROR); asyncpg's own pool may warn, with a
        # traceback, while it cannot reconnect, which is its business.
        errors = [line for line in worker.log(10_000).splitlines() if " ERROR " in line]
        assert not errors, worker.log(10_000)
    print(
        f"\nPostgreSQL {how} {outage_s:.0f} s: {orders} orders, {in_flight} in flight,"
        f" {confirmed - 1} confirmed, {failed} failed, 0 lost, 0 double;"
        f" all terminal {recovery_s:.1f} s after it was back"
    )
    assert recovery_s <= RESUME_WITHIN_S, f"orders resumed {recovery_s:.1f} s after PostgreSQL"


async def _wait_status(
    conn: asyncpg.Connection, order_id: uuid.UUID, status: str, timeout_s: float
) -> asyncpg.Record:
    deadline = time.monotonic() + timeout_s
    while True:
        row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        assert row is not None
        if row["status"] == status:
            return row
        assert time.monotonic() < deadline, dict(row)
        await asyncio.sleep(0.02)  # sleep-ok: polling the source of truth with a deadline


async def _wait_blocked_by(conn: asyncpg.Connection, pid: int, timeout_s: float) -> list[int]:
    """The backends waiting on a lock that backend `pid` holds, once there is one."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
        )
        if rows:
            return [r["pid"] for r in rows]
        assert time.monotonic() < deadline, "the worker never reached `building`"
        await asyncio.sleep(0.02)  # sleep-ok: polling the server's lock table with a deadline


@pytest.mark.timeout(90)
async def test_a_worker_killed_before_sending_does_not_use_up_an_attempt() -> None:
    async with deployment(SIM_LATENCY_SCALE="0.2") as d:
        api = await d.start_api()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            accepted = await submit(http, amount="1.25")
        order_id = uuid.UUID(accepted["orderId"])
        holder = await asyncpg.connect(d.servers.database_url)
        conn = await asyncpg.connect(d.servers.database_url)
        try:
            # Hold the order's third event (seq 3, `building`) in an open transaction: the
            # worker commits `routing` (seq 2) and then waits on this row before building.
            hold = holder.transaction()
            await hold.start()
            await holder.execute(
                "INSERT INTO order_events (order_id, seq, status) VALUES ($1, 3, 'held')", order_id
            )
            victim = await d.start_worker()
            row = await _wait_status(conn, order_id, "routing", timeout_s=20)
            assert (row["attempts"], row["tx_pending"]) == (1, False), dict(row)
            blocked = await _wait_blocked_by(conn, holder.get_server_pid(), timeout_s=20)
            victim.kill()  # between routing and building: nothing was signed or sent
            # A backend waiting on a lock notices its client is gone only once it has the
            # lock, and would then commit the dead worker's `building` after all: end it, as
            # if the statement had never been sent.
            for pid in blocked:
                await conn.execute("SELECT pg_terminate_backend($1)", pid)
            await hold.rollback()

            await d.start_worker()
            row = await wait_order_terminal(d.servers.database_url, str(order_id), 30)
            assert row["status"] == "confirmed", (row["error_code"], row["last_error"])
            assert row["runs"] == 2
            assert row["attempts"] == 1, "the interrupted attempt was counted as a used one"
            events = await conn.fetch(
                "SELECT status, attempt FROM order_events WHERE order_id = $1 ORDER BY seq",
                order_id,
            )
        finally:
            await conn.close()
            await holder.close()
        assert [(e["status"], e["attempt"]) for e in events] == [
            ("pending", 0),
            ("routing", 1),
            ("routing", 1),  # the same attempt, made again by the next run
            ("building", 1),
            ("submitted", 1),
            ("confirmed", 1),
        ]
        await _check_books(d, [str(order_id)])
