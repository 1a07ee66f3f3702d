"""The FastAPI application factory and its lifespan (where every resource is created)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import RedisSettings, create_pool
from fastapi import FastAPI

from app.admission import Admission
from app.deps import Resources
from app.errors import install_error_handlers
from app.hub import EventHub
from app.routes import orders, sim, system, ws
from shared import db as database
from shared.settings import Settings, get_settings
from shared.sim.market import Market
from shared.sim.wallet import load_keypair

log = logging.getLogger(__name__)

DESCRIPTION = """
Best-venue execution of Solana swaps across Raydium and Meteora (simulated cluster).

Submit with `POST /api/orders/execute`, then follow the order on the WebSocket at the returned
`wsUrl`: `pending → routing → building → submitted → confirmed` (or `failed`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` defaults to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.database_url or not settings.redis_url:
            raise RuntimeError("DATABASE_URL and REDIS_URL must be set (`make run` sets them)")
        pool = await database.create_pool(settings.database_url)
        try:
            async with pool.acquire() as conn:
                await database.migrate(conn)
            redis = await create_pool(RedisSettings.from_dsn(settings.redis_url))
            try:
                market = Market(redis, settings)
                await market.ensure_seeded()
                hub = EventHub(redis, settings.ws_buffer_events)
                await hub.start()
                signer = str(load_keypair(settings).pubkey())
                admission = Admission(redis, settings.rate_limit_per_s, settings.max_queue_depth)
                app.state.resources = Resources(
                    settings, pool, redis, hub, market, admission, signer
                )
                log.info("API ready on port %d", settings.port)
                yield
                await hub.stop()
            finally:
                await redis.aclose()
        finally:
            await pool.close()

    app = FastAPI(
        title="Order Execution Engine",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(orders.router)
    app.include_router(ws.router)
    app.include_router(system.router)
    app.include_router(sim.router)
    return app
