"""Request-scoped access to the resources the lifespan created."""

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from app.admission import Admission
from app.hub import EventHub
from app.outages import Dependency
from shared.metrics import ApiMetrics
from shared.settings import Settings
from shared.sim.market import Market


@dataclass(slots=True)
class Resources:
    settings: Settings
    db: asyncpg.Pool
    redis: ArqRedis
    hub: EventHub
    market: Market
    admission: Admission
    signer: str
    # The same servers behind a deadline and a breaker (`app.outages`): what requests use.
    pg_guard: Dependency[asyncpg.Pool]
    redis_guard: Dependency[ArqRedis]
    metrics: ApiMetrics


async def get_resources(conn: HTTPConnection) -> Resources:
    # async on purpose: FastAPI runs a plain `def` dependency in a thread pool, per request.
    res: Resources = conn.app.state.resources
    return res


Res = Annotated[Resources, Depends(get_resources)]


def ws_base(conn: HTTPConnection) -> str:
    """`ws://host` or `wss://host` as the client reached us (honouring X-Forwarded-*)."""
    proto = conn.headers.get("x-forwarded-proto", conn.url.scheme).split(",")[0].strip()
    secure = proto in ("https", "wss")
    host = conn.headers.get("x-forwarded-host") or conn.headers.get("host") or conn.url.netloc
    return f"{'wss' if secure else 'ws'}://{host.split(',')[0].strip()}"


def request_ws_base(request: Request) -> str:
    return ws_base(request)
