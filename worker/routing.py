"""The routing step's parts: the route for an order now, its signed instructions, and what the
`confirmed` event says about each leg's fill."""

from typing import Any

from shared.market.plan import Decision, RoutePlan
from shared.market.pools import VENUE_NAMES
from shared.market.tokens import TOKENS, Token, from_base_units
from shared.numbers import dec_str
from shared.routewire import stored_options
from shared.rows import OrderRow
from shared.sim.market import Market
from shared.sim.programs import SwapInstruction


async def decide(
    market: Market, row: OrderRow, token_in: Token, token_out: Token
) -> Decision | None:
    """The best route for the order now (its stored route options, exact-in or exact-out);
    None when nothing can fill it."""
    options = stored_options(row.payload)
    if row.exact_amount_out is not None:
        return await market.route(token_in, token_out, int(row.exact_amount_out), options, True)
    assert row.amount_in is not None  # an exact-in order always has its input
    return await market.route(token_in, token_out, int(row.amount_in), options)


def swap_instructions(
    plan: RoutePlan, owner: str, slippage_bps: int, floor_out: int
) -> list[SwapInstruction]:
    """One instruction per leg, in order, carrying the leg's guard (`RoutePlan.guards`)."""
    return [
        SwapInstruction(
            program_id=g.leg.pool.program_id,
            pool=g.leg.pool.address,
            owner=owner,
            mint_in=g.leg.mint_in,
            mint_out=g.leg.mint_out,
            amount_in=g.amount_in,
            min_amount_out=g.min_amount_out,
            exact_out=plan.exact_out,
        )
        for g in plan.guards(slippage_bps, floor_out)
    ]


def fills(
    legs: tuple[dict[str, Any], ...], token_in: Token, token_out: Token
) -> list[dict[str, Any]]:
    """Each leg's fill as the cluster recorded it, in human units."""
    tokens = {t.mint: t for t in (*TOKENS, token_in, token_out)}
    shown = []
    for leg in legs:
        t_in, t_out = tokens[leg["mintIn"]], tokens[leg["mintOut"]]
        shown.append(
            {
                "dex": leg["venue"],
                "pool": leg["pool"],
                "tokenIn": t_in.symbol,
                "tokenOut": t_out.symbol,
                "amountIn": dec_str(from_base_units(t_in, int(leg["amountIn"]))),
                "amountOut": dec_str(from_base_units(t_out, int(leg["amountOut"]))),
                "feeAmount": dec_str(from_base_units(t_in, int(leg["fee"]))),
            }
        )
    return shown


def describe(plan: RoutePlan) -> str:
    """The route's legs in one line for the log: venue, pool kind, tokens and amounts."""
    return "; ".join(
        f"{VENUE_NAMES[leg.dex]} {leg.pool.kind} {leg.amount_in}->{leg.amount_out}"
        for leg in plan.legs
    )
