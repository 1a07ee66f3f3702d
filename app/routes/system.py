"""`GET /api/stats`, `GET /api/quotes`, `GET /health`."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app import service
from app.callers import Reader, needs
from app.deps import Res
from app.errors import ERROR_RESPONSES, json_response
from app.outages import Dependency
from shared.apikeys import Scope
from shared.models import Stats, validate_order

router = APIRouter(tags=["system"])


@router.get("/api/stats", response_model=Stats, responses=ERROR_RESPONSES)
async def stats(res: Res, caller: Reader) -> dict[str, Any]:
    return await service.stats(res.pg_guard, res.redis_guard, caller)


@router.get(
    "/api/quotes",
    responses=ERROR_RESPONSES,
    summary="Both venues' quotes and the route, without executing",
    dependencies=[Depends(needs(Scope.READ))],
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
        res.redis_guard, res.market, order.token_in, order.token_out, order.amount_in, slippage_bps
    )


async def _probe(dependency: Dependency[Any]) -> dict[str, Any]:
    """One dependency's readiness, answered within its deadline (at once while it is known
    to be down: its breaker is probing it already)."""
    if not dependency.up:
        return {"ok": False, "error": f"{dependency.name} is unavailable"}
    try:
        elapsed_s = await dependency.check()
    except Exception as exc:  # any failure is the answer here: not ready
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"ok": True, "latencyMs": round(elapsed_s * 1000, 2)}


@router.get("/health")
async def health(res: Res) -> Response:
    """Liveness and readiness: 200 when PostgreSQL and Redis both answer, else 503."""
    pg, redis = await asyncio.gather(_probe(res.pg_guard), _probe(res.redis_guard))
    ok = pg["ok"] and redis["ok"]
    body = {
        "status": "ok" if ok else "unavailable",
        "postgres": pg,
        "redis": redis,
        "subscribers": res.hub.subscribers,
    }
    return json_response(body, 200 if ok else 503, None if ok else {"Retry-After": "2"})
