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
from shared.market.router import MAX_HOPS, MAX_SPLITS
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
_AMOUNT_CHARS = MAX_DECIMAL_CHARS


def _documented(alias: str, pattern: str, description: str, max_length: int = MAX_TEXT) -> Any:
    """A query parameter whose OpenAPI schema carries `pattern`; the route checks it itself,
    so that a refusal names the problem rather than quoting the regular expression."""
    return Query(
        alias=alias,
        max_length=max_length,
        description=description,
        json_schema_extra={"pattern": pattern},
    )


_BOOL = "^(?:true|false)$"
_DEXES = "^(?:raydium|meteora|raydium,meteora|meteora,raydium)$"
_EXCLUDE = "^(?:raydium|meteora)$"
_MAX_HOPS = f"^[0-{MAX_HOPS}]$"
_MAX_SPLITS = f"^[1-{MAX_SPLITS}]$"
_FORMATS = {
    "slippageBps": (_SLIPPAGE, "an integer from 1 to 5000"),
    "onlyDirectRoutes": (_BOOL, "true or false"),
    "dexes": (_DEXES, "raydium, meteora or both, comma-separated"),
    "excludeDexes": (_EXCLUDE, "raydium or meteora"),
    "maxHops": (_MAX_HOPS, f"an integer from 0 to {MAX_HOPS}"),
    "maxSplits": (_MAX_SPLITS, f"an integer from 1 to {MAX_SPLITS}"),
}
_FORMAT_RES = {name: re.compile(pattern) for name, (pattern, _) in _FORMATS.items()}


def _well_formed(params: dict[str, str | None]) -> None:
    """400 for any parameter that is malformed on its own."""
    problems = [
        {"field": name, "message": "unknown token"}
        for name in ("tokenIn", "tokenOut")
        if _ANY_TOKEN_RE.fullmatch(params[name] or "") is None
    ]
    for name in ("amountIn", "amountOut"):
        if params[name] is not None:
            try:
                positive_decimal(params[name])
            except ValueError as exc:
                problems.append({"field": name, "message": str(exc)})
    problems += [
        {"field": name, "message": _FORMATS[name][1]}
        for name, pattern in _FORMAT_RES.items()
        if params[name] is not None and pattern.fullmatch(params[name] or "") is None
    ]
    if problems:
        raise InvalidOrder(f"{problems[0]['field']}: {problems[0]['message']}", problems)


def _as_order(params: dict[str, str | None]) -> dict[str, Any]:
    """The well-formed parameters as the order body they stand for."""
    order: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    for name in ("slippageBps", "maxHops", "maxSplits"):
        if name in order:
            order[name] = int(order[name])
    if "onlyDirectRoutes" in order:
        order["onlyDirectRoutes"] = order["onlyDirectRoutes"] == "true"
    for name in ("dexes", "excludeDexes"):
        if name in order:
            order[name] = order[name].split(",")
    return order


@router.get("/api/stats", response_model=Stats, responses=ERROR_RESPONSES)
async def stats(res: Res, caller: Reader) -> dict[str, Any]:
    return await service.stats(res.pg_guard, res.redis_guard, caller)


@router.get(
    "/api/quotes",
    responses=ERROR_RESPONSES,
    summary="Both venues' quotes and the route, without executing",
    description="Give amountIn (exact-in) or amountOut (exact-out). Each parameter is "
    "checked on its own (400 when one is malformed); a well-formed request the market cannot "
    "serve (both or neither amount, a pair no route within maxHops trades, an amount finer "
    "than its token's decimals, dexes with excludeDexes, or one nothing can fill) is 422 "
    "`NO_ROUTE`.",
    dependencies=[Depends(needs(Scope.READ))],
)
async def quotes(
    res: Res,
    token_in: Annotated[str, _documented("tokenIn", _ANY_TOKEN, "symbol (any case) or mint")],
    token_out: Annotated[str, _documented("tokenOut", _ANY_TOKEN, "symbol (any case) or mint")],
    amount_in: Annotated[
        str | None,
        _documented("amountIn", _QUOTE_AMOUNT, "tokenIn to spend (or amountOut)", _AMOUNT_CHARS),
    ] = None,
    amount_out: Annotated[
        str | None,
        _documented("amountOut", _QUOTE_AMOUNT, "exact-out: tokenOut to receive", _AMOUNT_CHARS),
    ] = None,
    slippage_bps: Annotated[str, _documented("slippageBps", _SLIPPAGE, "1-5000")] = "50",
    only_direct: Annotated[
        str | None, _documented("onlyDirectRoutes", _BOOL, "true: no intermediate tokens")
    ] = None,
    dexes: Annotated[str | None, _documented("dexes", _DEXES, "venues the route may use")] = None,
    exclude_dexes: Annotated[
        str | None, _documented("excludeDexes", _EXCLUDE, "a venue the route may not use")
    ] = None,
    max_hops: Annotated[
        str | None, _documented("maxHops", _MAX_HOPS, "intermediate tokens, at most")
    ] = None,
    max_splits: Annotated[
        str | None, _documented("maxSplits", _MAX_SPLITS, "pools per hop, at most")
    ] = None,
) -> dict[str, Any]:
    params = {
        "tokenIn": token_in,
        "tokenOut": token_out,
        "amountIn": amount_in,
        "amountOut": amount_out,
        "slippageBps": slippage_bps,
        "onlyDirectRoutes": only_direct,
        "dexes": dexes,
        "excludeDexes": exclude_dexes,
        "maxHops": max_hops,
        "maxSplits": max_splits,
    }
    _well_formed(params)
    try:
        valid = validate_order(_as_order(params))
        return await service.quote(res.redis_guard, res.market, valid)
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
