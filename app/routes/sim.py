"""Simulation controls (not part of a real exchange API): token launches for snipers."""

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import Field, StrictStr
from solders.pubkey import Pubkey

from app.callers import needs
from app.deps import Res
from app.errors import ERROR_RESPONSES
from shared import triggers
from shared.apikeys import Scope
from shared.errors import Conflict, InvalidOrder
from shared.models import CamelModel
from shared.numbers import dec_str
from shared.sim import launches

# Every simulation control needs `admin` (anonymous callers may use them in AUTH_MODE=open).
router = APIRouter(
    prefix="/api/sim", tags=["simulation"], dependencies=[Depends(needs(Scope.ADMIN, sim=True))]
)


class LaunchCreate(CamelModel):
    model_config = CamelModel.model_config | {"extra": "forbid"}

    mint: StrictStr | None = Field(None, max_length=64, description="base58 mint; random if unset")
    symbol: StrictStr | None = Field(None, min_length=1, max_length=10)
    price_sol: Decimal = Field(
        launches.DEFAULT_PRICE_SOL, ge=Decimal("1e-12"), le=10**6, allow_inf_nan=False
    )
    liquidity_sol: Decimal = Field(
        launches.DEFAULT_LIQUIDITY_SOL, gt=0, le=10**7, allow_inf_nan=False
    )


@router.post(
    "/launches",
    status_code=201,
    responses=ERROR_RESPONSES,
    summary="SIMULATION: launch a new token with its first pool; waiting snipers fire",
)
async def create_launch(
    res: Res, body: Annotated[LaunchCreate | None, Body()] = None
) -> dict[str, Any]:
    req = body or LaunchCreate()
    if req.mint is not None:
        try:
            Pubkey.from_string(req.mint)
        except ValueError:
            raise InvalidOrder(
                "mint: not a base58 address", [{"field": "mint", "message": "invalid"}]
            ) from None
    try:
        launch = await launches.launch(
            res.redis, req.mint, req.symbol, req.price_sol, req.liquidity_sol
        )
    except launches.LaunchError as exc:
        raise Conflict(str(exc)) from None
    except ValueError as exc:  # a price/liquidity that leaves the pool empty on one side
        raise InvalidOrder(
            f"launch: {exc}", [{"field": "liquiditySol", "message": str(exc)}]
        ) from None
    fired = await triggers.fire_snipers(res.db, res.redis, launch.token.mint, launch.token.symbol)
    return {
        "mint": launch.token.mint,
        "symbol": launch.token.symbol,
        "decimals": launch.token.decimals,
        "dex": launch.pool.venue,
        "pool": launch.pool.address,
        "poolKind": launch.pool.kind,
        "priceSol": dec_str(launch.price_sol),
        "liquiditySol": dec_str(launch.liquidity_sol),
        "snipersTriggered": fired,
    }
