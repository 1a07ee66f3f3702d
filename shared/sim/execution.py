"""What a route's transaction does to the pools it names: every leg in order, or nothing.

The cluster reads the pools, asks this module for the outcome, and writes it in one atomic
step (`shared.sim.cluster`). A leg fails with its venue's own error (the slippage error when
its guard is not met, `InsufficientLiquidity` when the pool cannot fill it); a leg that would
spend more of an intermediate token than the legs before it delivered fails with the token
program's `InsufficientFunds`. Any failure leaves every pool as it was.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.market.pools import SLIPPAGE_ERRORS, Pool
from shared.market.types import InsufficientLiquidity, SwapQuote
from shared.sim.programs import VENUE_PROGRAMS, SwapInstruction

INSUFFICIENT_FUNDS = "InsufficientFunds"  # the SPL Token program's error


@dataclass(frozen=True, slots=True)
class Outcome:
    """The pools after the transaction (as read, if it failed) and the signature's record:
    `err`, the totals, and one entry per leg (`legs`)."""

    pools: dict[str, Pool]
    changed: frozenset[str]
    record: dict[str, Any]


def execute_route(pools: dict[str, Pool], swaps: Sequence[SwapInstruction], now_ts: int) -> Outcome:
    """Run `swaps` in order against `pools` (by address): all of them, or none."""
    state = dict(pools)
    legs: list[dict[str, Any]] = []
    flow: dict[str, int] = defaultdict(int)  # per mint: delivered minus spent so far
    for i, swap in enumerate(swaps):
        venue = VENUE_PROGRAMS[swap.program_id]
        pool = state[swap.pool]
        try:
            moved, fill = _swap(pool, swap, now_ts)
        except InsufficientLiquidity:
            return _failed(pools, swaps, i, "InsufficientLiquidity")
        if not _guard_met(swap, fill):
            return _failed(pools, swaps, i, SLIPPAGE_ERRORS[venue])
        if i and swap.mint_in != swaps[0].mint_in and flow[swap.mint_in] < fill.amount_in:
            return _failed(pools, swaps, i, INSUFFICIENT_FUNDS)
        flow[swap.mint_in] -= fill.amount_in
        flow[swap.mint_out] += fill.amount_out
        state[swap.pool] = moved
        legs.append(_leg(venue, swap, fill))
    first, last = swaps[0].mint_in, swaps[-1].mint_out
    main = max((leg for leg in legs if leg["mintIn"] == first), key=lambda leg: leg["amountIn"])
    record = {
        "venue": main["venue"],
        "pool": main["pool"],
        "amountIn": sum(leg["amountIn"] for leg in legs if leg["mintIn"] == first),
        "amountOut": sum(leg["amountOut"] for leg in legs if leg["mintOut"] == last),
        "fee": sum(leg["fee"] for leg in legs if leg["mintIn"] == first),
        "err": None,
        "legs": legs,
    }
    return Outcome(state, frozenset(s.pool for s in swaps), record)


def _swap(pool: Pool, swap: SwapInstruction, now_ts: int) -> tuple[Pool, SwapQuote]:
    if swap.exact_out:
        return pool.swap_exact_out(swap.mint_in, swap.min_amount_out, now_ts)
    return pool.swap(swap.mint_in, swap.amount_in, now_ts)


def _guard_met(swap: SwapInstruction, fill: SwapQuote) -> bool:
    if swap.exact_out:
        return fill.amount_in <= swap.amount_in
    return fill.amount_out >= swap.min_amount_out


def _leg(venue: str, swap: SwapInstruction, fill: SwapQuote) -> dict[str, Any]:
    return {
        "venue": venue,
        "pool": swap.pool,
        "mintIn": swap.mint_in,
        "mintOut": swap.mint_out,
        "amountIn": fill.amount_in,
        "amountOut": fill.amount_out,
        "fee": fill.fee_amount,
    }


def _failed(pools: dict[str, Pool], swaps: Sequence[SwapInstruction], i: int, err: str) -> Outcome:
    swap = swaps[i]
    record = {
        "venue": VENUE_PROGRAMS[swap.program_id],
        "pool": swap.pool,
        "amountIn": sum(s.amount_in for s in swaps if s.mint_in == swaps[0].mint_in),
        "amountOut": 0,
        "fee": 0,
        "err": err,
        "failedLeg": i,
        "legs": [],
    }
    return Outcome(dict(pools), frozenset(), record)
