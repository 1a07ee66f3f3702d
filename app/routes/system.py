"""`GET /api/stats`, `GET /api/quotes`, `GET /health`."""

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app import service
from app.deps import Res
from app.errors import ERROR_RESPONSES, json_response
from shared.errors import InvalidOrder, NoRoute
from shared.grammar import amount_digits, positive_decimal_pattern, token_pattern
from shared.market.tokens import TOKENS
from shared.models import Stats, validate_order
from shared.numbers import MAX_DECIMAL_CHARS

router = APIRouter(tags=["system"])

_ANY_TOKEN = token_pattern(list(TOKENS))
_QUOTE_AMOUNT = positive_decimal_pattern(
    max(t.decimals for t in TOKENS), max(amount_digits(t.decimals) for t in TOKENS)
)
_SLIPPAGE = "^(?:[1-9][0-9]{0,2}|[1-4][0-9]{3}|5000)$"  # 1-5000, no sign, no leading zero

HEALTH_TIMEOUT_S = 2.0


@router.get("/api/stats", response_model=Stats, responses=ERROR_RESPONSES)
async def stats(res: Res) -> dict[str, Any]:
    return await service.stats(res.db, res.redis)


@router.get(
    "/api/quotes",
    responses=ERROR_RESPONSES,
    summary="Both venues' quotes and the route, without executing",
    description="Each parameter is checked on its own (400 when one is malformed); a "
    "well-formed request the market cannot serve (a pair no pool trades, an amount finer "
    "than tokenIn's decimals, or one no venue can fill) is 422 `NO_ROUTE`.",
)
async def quotes(
    res: Res,
    token_in: Annotated[str, Query(alias="tokenIn", pattern=_ANY_TOKEN)],
    token_out: Annotated[str, Query(alias="tokenOut", pattern=_ANY_TOKEN)],
    amount_in: Annotated[
        str, Query(alias="amountIn", max_length=MAX_DECIMAL_CHARS, pattern=_QUOTE_AMOUNT)
    ],
    slippage_bps: Annotated[str, Query(alias="slippageBps", pattern=_SLIPPAGE)] = "50",
) -> dict[str, Any]:
    order = {"tokenIn": token_in, "tokenOut": token_out, "amountIn": amount_in}
    try:
        valid = validate_order(order | {"slippageBps": int(slippage_bps)})
        return await service.quote(
            res.market, valid.token_in, valid.token_out, valid.amount_in, valid.slippage_bps
        )
    except InvalidOrder as exc:  # every parameter is well-formed: what is left is the market
        raise NoRoute(exc.message, exc.details) from None


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
