"""`GET /api/stats`, `GET /api/quotes`, `GET /health`."""

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app import service
from app.callers import Reader, needs
from app.deps import Res
from app.errors import ERROR_RESPONSES, json_response
from app.outages import Dependency
from shared.apikeys import Scope
from shared.errors import InvalidOrder, NoRoute
from shared.grammar import MAX_TEXT, amount_digits, positive_decimal_pattern, token_pattern
from shared.market.tokens import TOKENS
from shared.models import Stats, positive_decimal, validate_order
from shared.numbers import MAX_DECIMAL_CHARS

router = APIRouter(tags=["system"])

_ANY_TOKEN = token_pattern(list(TOKENS))
_ANY_TOKEN_RE = re.compile(_ANY_TOKEN)
_QUOTE_AMOUNT = positive_decimal_pattern(
    max(t.decimals for t in TOKENS), max(amount_digits(t.decimals) for t in TOKENS)
)
_SLIPPAGE = "^(?:[1-9][0-9]{0,2}|[1-4][0-9]{3}|5000)$"  # 1-5000, no sign, no leading zero
_SLIPPAGE_RE = re.compile(_SLIPPAGE)


def _documented(alias: str, pattern: str, description: str, max_length: int = MAX_TEXT) -> Any:
    """A query parameter whose OpenAPI schema carries `pattern`; the route checks it itself,
    so that a refusal names the problem rather than quoting the regular expression."""
    return Query(
        alias=alias,
        max_length=max_length,
        description=description,
        json_schema_extra={"pattern": pattern},
    )


def _well_formed(token_in: str, token_out: str, amount_in: str, slippage_bps: str) -> None:
    """400 for any parameter that is malformed on its own."""
    problems = [
        {"field": name, "message": "unknown token"}
        for name, value in (("tokenIn", token_in), ("tokenOut", token_out))
        if _ANY_TOKEN_RE.fullmatch(value) is None
    ]
    try:
        positive_decimal(amount_in)
    except ValueError as exc:
        problems.append({"field": "amountIn", "message": str(exc)})
    if _SLIPPAGE_RE.fullmatch(slippage_bps) is None:
        problems.append({"field": "slippageBps", "message": "an integer from 1 to 5000"})
    if problems:
        raise InvalidOrder(f"{problems[0]['field']}: {problems[0]['message']}", problems)


@router.get("/api/stats", response_model=Stats, responses=ERROR_RESPONSES)
async def stats(res: Res, caller: Reader) -> dict[str, Any]:
    return await service.stats(res.pg_guard, res.redis_guard, caller)


@router.get(
    "/api/quotes",
    responses=ERROR_RESPONSES,
    summary="Both venues' quotes and the route, without executing",
    description="Each parameter is checked on its own (400 when one is malformed); a "
    "well-formed request the market cannot serve (a pair no pool trades, an amount finer "
    "than tokenIn's decimals, or one no venue can fill) is 422 `NO_ROUTE`.",
    dependencies=[Depends(needs(Scope.READ))],
)
async def quotes(
    res: Res,
    token_in: Annotated[str, _documented("tokenIn", _ANY_TOKEN, "symbol (any case) or mint")],
    token_out: Annotated[str, _documented("tokenOut", _ANY_TOKEN, "symbol (any case) or mint")],
    amount_in: Annotated[
        str, _documented("amountIn", _QUOTE_AMOUNT, "a decimal, > 0", MAX_DECIMAL_CHARS)
    ],
    slippage_bps: Annotated[str, _documented("slippageBps", _SLIPPAGE, "1-5000")] = "50",
) -> dict[str, Any]:
    _well_formed(token_in, token_out, amount_in, slippage_bps)
    order = {"tokenIn": token_in, "tokenOut": token_out, "amountIn": amount_in}
    try:
        valid = validate_order(order | {"slippageBps": int(slippage_bps)})
        return await service.quote(
            res.redis_guard,
            res.market,
            valid.token_in,
            valid.token_out,
            valid.amount_in,
            valid.slippage_bps,
        )
    except InvalidOrder as exc:  # every parameter is well-formed: what is left is the market
        raise NoRoute(exc.message, exc.details) from None


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
