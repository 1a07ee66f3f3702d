"""Test harness: real PostgreSQL and Redis, a real API server and a real arq worker.

Servers come from TEST_DATABASE_URL / TEST_REDIS_URL when set, else embedded ones are started
for the session. Each test gets a fresh database (cloned from a migrated template) and an empty
Redis database, then starts the stack it needs with `make_stack(**settings)`.
"""

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn
from arq.connections import RedisSettings, create_pool
from fastapi import FastAPI, params
from redis.asyncio import Redis
from starlette.types import ASGIApp

from app.__main__ import server_options
from app.main import create_app
from devstack.servers import EmbeddedPostgres, EmbeddedValkey
from shared import queries
from shared.db import create_pool as create_db_pool
from shared.db import init_connection, migrate
from shared.heap import freeze_startup_heap
from shared.jobqueue import QueueWorker, enqueue_order
from shared.settings import Settings
from shared.sim.market import Market
from shared.sim.transactions import SignedSwap
from worker.settings import worker_settings

TEMPLATE_DB = "oee_template"


@dataclass(frozen=True)
class Infra:
    pg_admin_url: str  # a maintenance database on the test server
    redis_url: str
    data_dir: Path


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session", autouse=True)
def _frozen_before_any_stack() -> None:
    """The API and the worker freeze the heap when they start, once per process. Here every
    stack runs in this one process: freeze it now, with only pytest and the imports in it,
    so that no test's stack is frozen for the rest of the session."""
    freeze_startup_heap()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with tempfile.TemporaryDirectory(prefix="oee-test-") as tmp:
        os.chmod(tmp, 0o755)  # as root, PostgreSQL runs as `nobody`, which must reach the data dir
        root = Path(tmp)
        pg_url, redis_url = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
        pg = None if pg_url else EmbeddedPostgres(root / "pg", fast=True)
        valkey = None if redis_url else EmbeddedValkey(root / "valkey", persist=False)
        try:
            pg_url = pg_url or pg.start()  # type: ignore[union-attr]
            redis_url = redis_url or valkey.start()  # type: ignore[union-attr]
            yield Infra(pg_url, redis_url, root)
        finally:
            if valkey is not None:
                valkey.stop()
            if pg is not None:
                pg.stop()


@pytest.fixture(scope="session")
async def template_db(infra: Infra) -> AsyncIterator[str]:
    """A migrated database that each test clones (CREATE DATABASE … TEMPLATE is fast)."""
    admin = await asyncpg.connect(infra.pg_admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        conn = await asyncpg.connect(_with_db(infra.pg_admin_url, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield TEMPLATE_DB
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
    finally:
        await admin.close()


@pytest.fixture
async def database_url(infra: Infra, template_db: str) -> AsyncIterator[str]:
    name = f"oee_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.pg_admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
        yield _with_db(infra.pg_admin_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[Redis]:
    client = Redis.from_url(infra.redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)  # json/jsonb as Python objects, as the app's pool does
    yield conn
    await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """A running API (real HTTP on a port) and zero or more in-process arq workers."""

    settings: Settings
    base_url: str
    http: httpx.AsyncClient
    redis: Redis
    _workers: list[tuple[QueueWorker, asyncio.Task[None]]] = field(default_factory=list)

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://")

    async def start_worker(self, **overrides: Any) -> QueueWorker:
        settings = self.settings.model_copy(update=overrides)
        kwargs = worker_settings(settings) | {"handle_signals": False, "poll_delay": 0.01}
        worker = QueueWorker(**kwargs)
        task = asyncio.create_task(worker.async_run())
        self._workers.append((worker, task))
        return worker

    async def stop_workers(self) -> None:
        """Let each worker finish what it is doing and stop, as `burst` mode does.

        Cancelling arq's loop mid-command can leave its Redis connection half-read; letting
        it wind down by itself does not.
        """
        for worker, task in self._workers:
            worker.burst, worker.max_burst_jobs = True, 0
            async with asyncio.timeout(60):
                await task
            await worker.close()
        self._workers.clear()

    async def requeue(self, order_id: uuid.UUID | str) -> None:
        """Queue the order's job again, as the sweeper would for a job that is gone."""
        assert self.settings.redis_url is not None
        arq = await create_pool(RedisSettings.from_dsn(self.settings.redis_url))
        try:
            await enqueue_order(arq, order_id)
        finally:
            await arq.aclose()

    async def record_first_attempt(
        self,
        order_id: uuid.UUID,
        signed: SignedSwap,
        last_valid_block_height: int,
        routing: dict[str, Any],
        routing_fields: dict[str, Any],
        building: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`routing` and `building` for attempt 1, as a worker writes them before it sends
        `signed` (a run started, the transaction stored as pending): the two new events."""
        assert self.settings.database_url is not None
        db = await create_db_pool(self.settings.database_url, min_size=1, max_size=1)
        try:
            async with db.acquire() as conn:
                assert (await queries.start_runs(conn, [order_id]))[0] is not None
                routed = await queries.transition(
                    conn, order_id, "routing", attempt=1, data=routing,
                    allowed_from=("pending",), fields={"attempts": 1, **routing_fields},
                )  # fmt: skip
                built = await queries.transition(
                    conn, order_id, "building", attempt=1, data=building,
                    allowed_from=("routing",),
                    fields={
                        "tx_hash": signed.signature, "tx_base64": signed.base64,
                        "last_valid_block_height": last_valid_block_height, "tx_pending": True,
                    },
                )  # fmt: skip
        finally:
            await db.close()
        assert routed is not None and built is not None
        return routed, built

    async def submit(self, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        order = body or {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
        response = await self.http.post("/api/orders/execute", json=order, headers=headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def test_settings(database_url: str, redis_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: no simulated delays, no random faults, a still market."""
    base: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "sim_latency_scale": 0.0,
        "sim_drop_rate": 0.0,
        "sim_expiry_rate": 0.0,
        "sim_rpc_timeout_rate": 0.0,
        "sim_tick_ms": 0,
        "sim_seed": 7,
        "backoff_base_ms": 10,
        "rate_limit_per_s": 0,
        "data_dir": str(data_dir),
        "log_level": "INFO",
        "worker_metrics_port": 0,  # each worker's metrics on a free port (`worker.exporter`)
    }
    return Settings(_env_file=None, **(base | overrides))


StackFactory = Callable[..., Awaitable[Stack]]


@asynccontextmanager
async def uvicorn_serving(app: ASGIApp, **options: Any) -> AsyncIterator[int]:
    """`app` served by uvicorn on a free local port, yielded once it listens, until the block
    ends; `options` go to `uvicorn.Config`."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)  # sleep-ok: polling uvicorn's own started flag
        yield port
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def make_stack(
    infra: Infra, database_url: str, redis: Redis, tmp_path: Path
) -> AsyncIterator[StackFactory]:
    """Start the API (and by default one worker) with settings overrides; stopped at teardown."""
    async with AsyncExitStack() as running:

        async def start(
            workers: int = 1,
            prepared_frames: bool = True,
            serve: Callable[[FastAPI], ASGIApp] | None = None,
            api_dependencies: Sequence[params.Depends] = (),
            **overrides: Any,
        ) -> Stack:
            """`serve`, if given, wraps the app for the server (the lifespan still reaches it);
            `api_dependencies` go to `create_app`."""
            settings = test_settings(database_url, infra.redis_url, tmp_path, **overrides)
            await Market(redis, settings).ensure_seeded()
            app = create_app(settings, api_dependencies=api_dependencies)
            port = await running.enter_async_context(
                uvicorn_serving(
                    app if serve is None else serve(app),
                    lifespan="on",
                    **server_options(settings)
                    # Without prepared frames every event goes through ASGI's send, as on other
                    # servers.
                    | ({} if prepared_frames else {"ws": "websockets-sansio"}),
                )
            )
            base = f"http://127.0.0.1:{port}"
            stack = Stack(settings, base, httpx.AsyncClient(base_url=base, timeout=30), redis)
            # Stopped in reverse: the workers, then the client, then the server.
            running.push_async_callback(stack.http.aclose)
            running.push_async_callback(stack.stop_workers)
            for _ in range(workers):
                await stack.start_worker()
            return stack

        yield start


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly, at the end, when the browser tests were skipped for want of a browser."""
    from tests.browser import NOT_RUN

    skipped = terminalreporter.stats.get("skipped", [])
    if any(NOT_RUN in str(getattr(r, "longrepr", "")) for r in skipped):
        terminalreporter.write_sep("!", NOT_RUN, yellow=True, bold=True)
