"""`GET /api/stats`, `GET /api/quotes`, `GET /health`."""

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app import service
from app.deps import Res
from app.errors import ERROR_RESPONSES, json_response
from shared.models import Stats, validate_order

router = APIRouter(tags=["system"])

HEALTH_TIMEOUT_S = 2.0


@router.get("/api/stats", response_model=Stats, responses=ERROR_RESPONSES)
async def stats(res: Res) -> dict[str, Any]:
    return await service.stats(res.db, res.redis)


@router.get(
    "/api/quotes",
    responses=ERROR_RESPONSES,
    summary="Both venues' quotes and the route, without executing",
)
async def quotes(
    res: Res,
    token_in: Annotated[str, Query(alias="tokenIn", max_length=64)],
    token_out: Annotated[str, Query(alias="tokenOut", max_length=64)],
    amount_in: Annotated[str, Query(alias="amountIn", max_length=64)],
    slippage_bps: Annotated[int, Query(alias="slippageBps", ge=1, le=5000)] = 50,
) -> dict[str, Any]:
    order = validate_order(
        {
            "tokenIn": token_in,
            "tokenOut": token_out,
            "amountIn": amount_in,
            "slippageBps": slippage_bps,
        }
    )
    return await service.quote(
        res.market, order.token_in, order.token_out, order.amount_in, slippage_bps
    )


async def _probe(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check, HEALTH_TIMEOUT_S)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"ok": True, "latencyMs": round((time.perf_counter() - started) * 1000, 2)}


@router.get("/health")
async def health(res: Res) -> Response:
    """Liveness and readiness: 200 when PostgreSQL and Redis both answer, else 503."""
    pg, redis = await asyncio.gather(_probe(res.db.fetchval("SELECT 1")), _probe(res.redis.ping()))
    ok = pg["ok"] and redis["ok"]
    body = {
        "status": "ok" if ok else "unavailable",
        "postgres": pg,
        "redis": redis,
        "subscribers": res.hub.subscribers,
    }
    return json_response(body, 200 if ok else 503, None if ok else {"Retry-After": "2"})
