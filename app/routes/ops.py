"""`GET /metrics` (Prometheus), `GET /livez` and `GET /readyz` (Kubernetes probes)."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import Res
from app.errors import json_response
from app.routes.system import _probe as probe
from shared.errors import NotFound
from shared.metrics import CONTENT_TYPE, ApiMetrics

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics of this API process")
async def metrics(request: Request) -> Response:
    found: ApiMetrics | None = getattr(request.app.state, "metrics", None)
    if found is None or not found.enabled:
        raise NotFound("metrics are off (METRICS_ENABLED=false)")
    return Response(found.render(), media_type=CONTENT_TYPE)


@router.get("/livez", summary="Liveness: the process runs (no I/O; restart it if this fails)")
async def livez() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: PostgreSQL and Redis answer (take it out of rotation if not)",
)
async def readyz(res: Res) -> Response:
    """200 when both answer within their deadlines, else 503 (at once while a breaker is
    open); the same probes as `/health`."""
    pg, redis = await asyncio.gather(probe(res.pg_guard), probe(res.redis_guard))
    ok = pg["ok"] and redis["ok"]
    body = {"status": "ready" if ok else "unavailable", "postgres": pg, "redis": redis}
    return json_response(body, 200 if ok else 503, None if ok else {"Retry-After": "2"})
