"""SPEC §7: a dependency outage gets 503 with Retry-After, never a 500 or a hang, and the service
recovers on its own when the server returns. The API and worker are real subprocesses; the
PostgreSQL and Valkey servers are this test's own, killed, frozen and restarted here."""

import asyncio
import contextlib
import time
import uuid
from typing import Any

import asyncpg
import httpx
import websockets
from redis.asyncio import Redis

from shared import apikeys
from tests.procs import (
    Proc,
    assert_executed_once,
    deployment,
    frozen,
    server_pids,
    submit,
    wait_for_log,
    wait_order_terminal,
    wait_submitted,
)

ANSWER_WITHIN_S = 5.0  # "no hang": every request is answered within a few seconds
RECOVER_WITHIN_S = 15.0
ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5"}


async def _timed(http: httpx.AsyncClient, method: str, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.request(method, path, json=ORDER if method == "POST" else None)
    return response, time.monotonic() - started


def _assert_unavailable(
    response: httpx.Response, elapsed_s: float, which: str, code: str = "SERVICE_UNAVAILABLE"
) -> None:
    where = f"{response.request.method} {response.request.url.path}"
    assert elapsed_s < ANSWER_WITHIN_S, f"{where} took {elapsed_s:.1f} s"
    assert response.status_code == 503, (where, response.status_code, response.text)
    assert int(response.headers["Retry-After"]) >= 1, where
    body = response.json()
    assert body["code"] == code, (where, body)
    assert which in body["error"], (where, body)


async def _count_orders(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM orders")
        return count
    finally:
        await conn.close()


async def _wait_health(http: httpx.AsyncClient, status: int) -> dict[str, Any]:
    """Poll /health until it answers `status` (each answer itself must be quick)."""
    deadline = time.monotonic() + RECOVER_WITHIN_S
    while True:
        response, elapsed = await _timed(http, "GET", "/health")
        assert elapsed < ANSWER_WITHIN_S, f"/health took {elapsed:.1f} s"
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, (status, response.status_code, response.text)
        await asyncio.sleep(0.1)  # sleep-ok: polling for readiness


async def _confirm_new_order(http: httpx.AsyncClient, database_url: str, worker: Proc) -> None:
    """After recovery, with no restart of any process: a new order is accepted and confirmed."""
    assert worker.alive(), f"the worker exited during the outage:\n{worker.log()}"
    accepted = await submit(http, amount="0.75")
    try:
        row = await wait_order_terminal(database_url, accepted["orderId"], 20, poll_s=0.2)
    except AssertionError as exc:
        alive = "alive" if worker.alive() else f"exited {worker.popen.returncode}"
        raise AssertionError(f"{exc}; the worker ({alive}) logged:\n{worker.log(30)}") from None
    assert worker.alive(), f"the worker exited during the outage:\n{worker.log()}"
    assert row["status"] == "confirmed", (row["error_code"], row["last_error"])


async def test_postgres_killed_gives_503_and_recovers_on_its_own() -> None:
    async with deployment() as d:
        api = await d.start_api()
        worker = await d.start_worker()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=ANSWER_WITHIN_S + 5) as http:
            before = await submit(http)
            await wait_order_terminal(d.servers.database_url, before["orderId"], 20)
            count = await _count_orders(d.servers.database_url)

            await asyncio.to_thread(d.servers.pg.kill)
            for _ in range(2):  # first on pooled connections that just broke, then on new ones
                for method, path in [
                    ("POST", "/api/orders/execute"),
                    ("GET", f"/api/orders/{before['orderId']}"),
                    ("GET", "/api/orders"),
                    ("GET", "/api/stats"),
                ]:
                    _assert_unavailable(*await _timed(http, method, path), "PostgreSQL")
            health = await _wait_health(http, 503)
            assert not health["postgres"]["ok"] and health["redis"]["ok"], health

            await asyncio.to_thread(d.servers.restart_postgres)
            health = await _wait_health(http, 200)
            assert health["postgres"]["ok"], health
            assert (await http.get(f"/api/orders/{before['orderId']}")).status_code == 200
            assert await _count_orders(d.servers.database_url) == count, "a 503 wrote an order"
            await _confirm_new_order(http, d.servers.database_url, worker)


async def test_postgres_lost_mid_order_the_order_still_finishes_once() -> None:
    """The worker's write of the outcome fails while PostgreSQL is down; once it is back the
    order is re-driven (sweeper) and settled from the recorded signature, not executed again."""
    async with deployment(SIM_LATENCY_SCALE="1.0") as d:
        api = await d.start_api()
        worker = await d.start_worker()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            accepted = await submit(http)
            await wait_submitted(accepted["wsUrl"])
            await asyncio.to_thread(d.servers.pg.kill)
            # The job met the outage, and the queue will run it again (worker.jobs).
            await wait_for_log(
                worker, f"order {accepted['orderId']}: running it again", timeout_s=15
            )
            await asyncio.to_thread(d.servers.restart_postgres)
            row = await wait_order_terminal(d.servers.database_url, accepted["orderId"], 30)
        assert row["status"] == "confirmed", (row["error_code"], row["last_error"])
        assert worker.alive()
        conn = await asyncpg.connect(d.servers.database_url)
        redis = Redis.from_url(d.servers.redis_url)
        try:
            await assert_executed_once(conn, redis, accepted["orderId"])
        finally:
            await redis.aclose()
            await conn.close()


async def test_redis_killed_post_503_reads_work_and_recovers_on_its_own() -> None:
    async with deployment() as d:
        api = await d.start_api()
        worker = await d.start_worker()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=ANSWER_WITHIN_S + 5) as http:
            before = await submit(http)
            await wait_order_terminal(d.servers.database_url, before["orderId"], 20)
            count = await _count_orders(d.servers.database_url)

            await asyncio.to_thread(d.servers.valkey.kill)
            for _ in range(2):
                _assert_unavailable(*await _timed(http, "POST", "/api/orders/execute"), "Redis")
                # Reads come from PostgreSQL, the source of truth, and keep working.
                response, elapsed = await _timed(http, "GET", f"/api/orders/{before['orderId']}")
                assert (response.status_code, elapsed < ANSWER_WITHIN_S) == (200, True)
                assert response.json()["status"] == "confirmed"
                response, elapsed = await _timed(http, "GET", "/api/orders")
                assert (response.status_code, elapsed < ANSWER_WITHIN_S) == (200, True)
                assert response.json()["count"] == count
            assert await _count_orders(d.servers.database_url) == count, "a 503 wrote an order"
            health = await _wait_health(http, 503)
            assert health["postgres"]["ok"] and not health["redis"]["ok"], health

            await asyncio.to_thread(d.servers.valkey.start)
            await _wait_health(http, 200)
            await _confirm_new_order(http, d.servers.database_url, worker)


async def test_postgres_unresponsive_gives_503_within_seconds() -> None:
    """A hung server or a partition (connections accepted, nothing answers) is an outage too:
    503 in a few seconds, not a request held for the driver's 10-30 s timeouts."""
    async with deployment() as d:
        api = await d.start_api()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=ANSWER_WITHIN_S + 5) as http:
            before = await submit(http)
            with frozen(server_pids(d.servers, "postgres")):
                answers = await asyncio.gather(
                    _timed(http, "POST", "/api/orders/execute"),
                    _timed(http, "GET", f"/api/orders/{before['orderId']}"),
                    _timed(http, "GET", "/api/stats"),
                    _timed(http, "GET", "/health"),
                    return_exceptions=True,
                )
                # A socket whose history must come from PostgreSQL is closed "try again later"
                # with the seq to resume from, in as little time.
                code, reason, elapsed = await _follow_unknown_order(api.ws_base)
                assert (code, elapsed < ANSWER_WITHIN_S) == (1013, True), (code, reason, elapsed)
                assert "PostgreSQL" in reason and "afterSeq=0" in reason, reason
            for answer in answers:
                assert not isinstance(answer, BaseException), f"no answer: {answer!r}"
            post, *reads, health = answers
            for answer in reads:
                assert not isinstance(answer, BaseException)
                _assert_unavailable(*answer, "PostgreSQL")
            assert not isinstance(health, BaseException)
            _assert_health_down(*health)
            # The insert reached the frozen server, so its answer says the outcome is unknown;
            # the server resumed past the order's deadline and refused its commit: 404 for good.
            assert not isinstance(post, BaseException)
            _assert_unavailable(*post, "PostgreSQL", "ORDER_OUTCOME_UNKNOWN")
            await _wait_health(http, 200)
            order_id = post[0].json()["orderId"]
            assert (await http.get(f"/api/orders/{order_id}")).status_code == 404


async def test_redis_unresponsive_gives_503_within_seconds() -> None:
    async with deployment() as d:
        api = await d.start_api()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=ANSWER_WITHIN_S + 5) as http:
            before = await submit(http)
            count = await _count_orders(d.servers.database_url)
            with frozen(server_pids(d.servers, "redis")):
                answers = await asyncio.gather(
                    _timed(http, "POST", "/api/orders/execute"),
                    _timed(http, "GET", "/api/stats"),
                    _timed(http, "GET", "/health"),
                    _timed(http, "GET", f"/api/orders/{before['orderId']}"),
                    return_exceptions=True,
                )
            for answer in answers:
                assert not isinstance(answer, BaseException), f"no answer: {answer!r}"
            post, stats, health, read = answers
            assert not isinstance(post, BaseException) and not isinstance(stats, BaseException)
            assert not isinstance(health, BaseException) and not isinstance(read, BaseException)
            _assert_unavailable(*post, "Redis")
            _assert_health_down(*health)
            # An account's stats and orders are PostgreSQL's (the engine-wide queue figures,
            # from Redis, are an admin's): both answer.
            for answer in (read, stats):
                assert answer[0].status_code == 200 and answer[1] < ANSWER_WITHIN_S
            assert await _count_orders(d.servers.database_url) == count
            await _wait_health(http, 200)


async def _follow_unknown_order(ws_base: str) -> tuple[int, str, float]:
    """Open a socket on an order the API has never seen; (close code, reason, seconds)."""
    started = time.monotonic()
    url = f"{ws_base}/api/orders/execute?orderId={uuid.uuid4()}"
    async with websockets.connect(url, open_timeout=ANSWER_WITHIN_S) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(ANSWER_WITHIN_S + 5):
                await ws.recv()
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or "", time.monotonic() - started


def _assert_health_down(response: httpx.Response, elapsed_s: float) -> None:
    assert elapsed_s < ANSWER_WITHIN_S, f"/health took {elapsed_s:.1f} s"
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1


async def test_keys_mode_reads_need_only_postgres_when_redis_is_frozen() -> None:
    """AUTH_MODE=keys: a key never seen before is still verified (PostgreSQL) while Redis,
    which keeps the bad-key counter, is frozen; an order needs Redis and gets 503."""
    async with deployment(AUTH_MODE="keys") as d:
        conn = await asyncpg.connect(d.servers.database_url)
        try:
            api = await d.start_api()
            key = (await apikeys.create_key(conn, "alice", [apikeys.Scope.TRADE])).key
        finally:
            await conn.close()
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=api.base_url, timeout=ANSWER_WITHIN_S + 5, headers=headers
        ) as http:
            with frozen(server_pids(d.servers, "redis")):
                read = await _timed(http, "GET", "/api/orders")
                post = await _timed(http, "POST", "/api/orders/execute")
                bad = await http.get("/api/orders", headers={"Authorization": "Bearer oee_x"})
            assert read[0].status_code == 200 and read[1] < ANSWER_WITHIN_S, read[0].text
            _assert_unavailable(*post, "Redis")
            assert bad.status_code == 401, bad.text
            await _wait_health(http, 200)
