"""arq `WorkerSettings`: start-up and shut-down of the worker's resources, and its jobs."""

import asyncio
import contextlib
import logging
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func

from shared import keys, triggers
from shared.db import create_pool, migrate
from shared.heap import freeze_startup_heap
from shared.jobqueue import EXECUTE_ORDER, JobQueue
from shared.metrics import WorkerMetrics
from shared.settings import Settings, get_settings
from shared.sim.cluster import Cluster
from shared.sim.market import Market
from shared.sim.wallet import load_keypair
from worker.engine import Engine
from worker.exporter import MetricsServer
from worker.jobs import execute_order
from worker.sweeper import run_sweeper
from worker.ticker import run_market_loop
from worker.writes import Writes

log = logging.getLogger(__name__)

JOB_MAX_TRIES = 1000


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or get_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set (`make run` starts an embedded PostgreSQL)")
    db = await create_pool(
        settings.database_url,
        max_size=min(settings.worker_concurrency + 4, 50),
        # Nobody waits on a worker's statement: be patient with a slow database, not a user.
        timeout_s=max(settings.db_timeout_s, 10.0),
    )
    async with db.acquire() as conn:
        await migrate(conn)
    redis = ctx["redis"]
    market = Market(redis, settings)
    await market.ensure_seeded()
    keypair = load_keypair(settings)
    cluster = Cluster(redis, market, settings)
    metrics = WorkerMetrics(settings.metrics_enabled)
    engine = Engine(
        settings, db, redis, JobQueue(redis), market, cluster, keypair, Writes(db, redis), metrics
    )
    ctx["engine"] = engine
    if settings.metrics_enabled:
        exporter = MetricsServer(metrics, redis, market)
        port = await exporter.start(settings.host, settings.worker_metrics_port)
        ctx["metrics_server"] = exporter  # once it listens: its port is known
        log.info("worker metrics on http://%s:%d/metrics", settings.host, port)
    waiting = await triggers.rebuild_index(db, redis)
    ctx["background"] = [
        asyncio.create_task(run_market_loop(engine), name="market-loop"),
        asyncio.create_task(run_sweeper(engine), name="sweeper"),
    ]
    freeze_startup_heap()
    log.info(
        "worker ready: concurrency %d, signer %s, %d waiting orders indexed",
        settings.worker_concurrency,
        keypair.pubkey(),
        waiting,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    """Stop the background loops and close the database pool; safe to call twice."""
    for task in ctx.pop("background", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    exporter: MetricsServer | None = ctx.pop("metrics_server", None)
    if exporter is not None:
        await exporter.close()
    engine: Engine | None = ctx.pop("engine", None)
    if engine is not None:
        await engine.db.close()


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `shared.jobqueue.QueueWorker` (an `arq.Worker`) from our settings."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (`make run` starts an embedded Valkey)")
    return {
        "functions": [
            # Our own counters in PostgreSQL bound the work (MAX_ATTEMPTS, MAX_RUNS); arq's
            # tries only bound how long a job follows an outage with short retries (about a
            # quarter of an hour at `worker.jobs.DEPENDENCY_RETRY_MAX_S`). If arq gives up, the
            # sweeper queues the order again.
            func(
                execute_order,
                name=EXECUTE_ORDER,
                max_tries=JOB_MAX_TRIES,
                keep_result=0,
                timeout=settings.job_timeout_s,
            ),
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": keys.QUEUE_NAME,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.job_timeout_s,
        "keep_result": 0,
        "poll_delay": 0.05,
        "handle_signals": True,
        # SIGTERM: take no new jobs, let running ones finish; any still running after the
        # grace period are cancelled and re-queued by arq, and resume from PostgreSQL.
        "job_completion_wait": settings.shutdown_grace_s,
        "ctx": {"settings": settings},
        "lease_s": settings.job_lease_s,  # QueueWorker: the in-progress mark is a lease this long
    }
