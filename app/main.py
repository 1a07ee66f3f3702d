"""The FastAPI application factory and its lifespan (where every resource is created)."""

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
from arq.connections import ArqRedis
from fastapi import FastAPI, params
from fastapi.telemetry import TelemetryConfig
from redis.asyncio import Redis

from app.admission import Admission
from app.auth import Authenticator
from app.deps import Resources
from app.errors import install_error_handlers
from app.hub import EventHub
from app.observe import RequestMiddleware
from app.outages import Dependency
from app.owners import RecentOwners
from app.risk import RiskChecks
from app.routes import admin, dashboard, markets, ops, orders, sim, system, ws
from shared import db as database
from shared import queries
from shared.heap import freeze_startup_heap
from shared.metrics import ApiMetrics
from shared.outages import POSTGRESQL, REDIS
from shared.settings import Settings, get_settings
from shared.sim.market import Market
from shared.sim.wallet import load_keypair

log = logging.getLogger(__name__)

DESCRIPTION = """
Best-venue execution of Solana swaps across Raydium and Meteora (simulated cluster).

Submit with `POST /api/orders/execute`, then follow the order on the WebSocket at the returned
`wsUrl`: `pending → routing → building → submitted → confirmed` (or `failed`).
"""


async def _select_one(pool: asyncpg.Pool) -> object:
    return await pool.fetchval("SELECT 1")


async def _ping(redis: ArqRedis) -> object:
    return await redis.ping()


def _telemetry(enabled: bool) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry spans, metrics and logs, or none: with them off FastAPI does
    not look for a configured OpenTelemetry SDK on every request (OTEL_ENABLED)."""
    return {"tracing": enabled, "metrics": enabled, "logs": enabled}


def create_app(
    settings: Settings | None = None, *, api_dependencies: Sequence[params.Depends] = ()
) -> FastAPI:
    """Build the app; `settings` defaults to the environment's. `api_dependencies` run before
    every order and simulation route, the order WebSocket included (authentication goes here).

    Every request goes through FastAPI's own routing, the two busiest (`POST` and the WebSocket
    on `/api/orders/execute`) too: whatever guards a route (app-, router- or route-level
    dependencies, `dependency_overrides`, middleware, body limits, exception handlers) guards
    them as well. Those two are routes of the app's own router, ahead of the included routers:
    FastAPI matches a route inside an included router twice per request (once to choose the
    router, once within it), and every order makes one request of each. With no
    `api_dependencies` their handlers skip FastAPI's parameter solving, which has nothing to
    solve for them (`app.hotpath`, which fails closed).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.database_url or not settings.redis_url:
            raise RuntimeError("DATABASE_URL and REDIS_URL must be set (`make run` sets them)")
        async with AsyncExitStack() as resources:  # closed in reverse order
            pool = await database.create_pool(
                settings.database_url, timeout_s=settings.db_timeout_s
            )
            resources.push_async_callback(pool.close)
            async with pool.acquire() as conn:
                await database.migrate(conn)
            # Commands time out, so a frozen Redis gives a 503 instead of a hung request.
            redis = ArqRedis.from_url(
                settings.redis_url,
                socket_timeout=settings.redis_timeout_s,
                socket_connect_timeout=settings.redis_timeout_s,
            )
            resources.push_async_callback(redis.aclose)
            # The event subscription idles between events by design: its own client, no timeout.
            listener = Redis.from_url(settings.redis_url, health_check_interval=15)
            resources.push_async_callback(listener.aclose)
            market = Market(redis, settings)
            await market.ensure_seeded()

            async def last_seqs(order_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
                async with pool.acquire() as conn:
                    return await queries.last_seqs(conn, order_ids)

            hub = EventHub(listener, last_seqs, settings.ws_check_s, settings.ws_replay_orders)
            await hub.start()
            resources.push_async_callback(hub.stop)
            signer = str(load_keypair(settings).pubkey())
            admission = Admission(redis, settings.rate_limit_per_s, settings.max_queue_depth)
            pg_guard = Dependency(POSTGRESQL, pool, settings.db_timeout_s, _select_one)
            resources.push_async_callback(pg_guard.close)
            redis_guard = Dependency(REDIS, redis, settings.redis_timeout_s, _ping)
            resources.push_async_callback(redis_guard.close)
            auth = Authenticator(settings.auth_mode, pg_guard, redis_guard, settings.auth_cache_s)
            risk = RiskChecks(settings, pg_guard, redis_guard, market)
            owners = RecentOwners(max(settings.ws_replay_orders, 1024))
            metrics = ApiMetrics(settings.metrics_enabled)
            metrics.watch(lambda: hub.subscribers, lambda: (pg_guard, redis_guard))
            app.state.metrics = metrics
            app.state.resources = Resources(
                settings,
                pool,
                redis,
                hub,
                market,
                admission,
                signer,
                pg_guard,
                redis_guard,
                auth,
                risk,
                owners,
                metrics,
            )
            freeze_startup_heap()
            log.info("API ready on port %d", settings.port)
            yield

    app = FastAPI(
        title="Order Execution Engine",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=_telemetry(settings.otel_enabled),
    )
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware)  # request ids and per-route timing, every request
    orders.add_execute_route(app, api_dependencies)
    ws.add_order_socket(app, api_dependencies)
    for router in (orders.router, sim.router):
        app.include_router(router, dependencies=api_dependencies)
    app.include_router(system.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    app.include_router(markets.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    return app
