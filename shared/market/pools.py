"""One interface over both venues' pool math, and the pools' stored (JSON) form."""

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

import orjson

from shared.market.meteora import (
    FEE_PRECISION,
    METEORA_DLMM,
    DlmmPool,
    dlmm_base_fee_rate,
    dlmm_quote,
    dlmm_reprice,
    dlmm_spot_price,
    dlmm_swap,
)
from shared.market.raydium import (
    BPS_DENOMINATOR,
    RAYDIUM_AMM_V4,
    CpPool,
    cp_min_input,
    cp_quote,
    cp_reprice,
    cp_spot_price,
    cp_swap,
)
from shared.market.types import InsufficientLiquidity, NothingOut, SwapQuote

Venue = Literal["raydium", "meteora"]
VENUE_NAMES: dict[str, str] = {"raydium": "Raydium", "meteora": "Meteora"}
# The program's own error name for "output below the minimum the user signed for".
SLIPPAGE_ERRORS: dict[str, str] = {
    "raydium": "ExceededSlippage",
    "meteora": "ExceededAmountSlippageTolerance",
}


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool of either venue at a known version (the version guards concurrent writes)."""

    venue: Venue
    state: CpPool | DlmmPool
    version: int

    @property
    def address(self) -> str:
        return self.state.address

    @property
    def program_id(self) -> str:
        return self.state.program_id if isinstance(self.state, CpPool) else METEORA_DLMM

    @property
    def mints(self) -> tuple[str, str]:
        s = self.state
        return (s.mint_a, s.mint_b) if isinstance(s, CpPool) else (s.mint_x, s.mint_y)

    @property
    def kind(self) -> str:
        s = self.state
        if isinstance(s, DlmmPool):
            return f"DLMM bin {s.bin_step}"
        if s.program_id == RAYDIUM_AMM_V4:
            return "AMM v4"
        return f"CPMM {Decimal(s.fee_bps) / 100:g}%"

    def _forward(self, mint_in: str) -> bool:
        first, second = self.mints
        if mint_in not in (first, second):
            raise ValueError(f"{mint_in} is not traded by pool {self.address}")
        return mint_in == first

    def quote(self, mint_in: str, amount_in: int, now_ts: int) -> SwapQuote:
        """Exact-in quote; raises `InsufficientLiquidity` when the pool cannot fill it."""
        s, forward = self.state, self._forward(mint_in)
        if isinstance(s, CpPool):
            return cp_quote(s, forward, amount_in)
        return dlmm_quote(s, forward, amount_in, now_ts)

    def swap(self, mint_in: str, amount_in: int, now_ts: int) -> tuple["Pool", SwapQuote]:
        """The pool after the swap (version + 1) and the fill."""
        s, forward = self.state, self._forward(mint_in)
        new_state: CpPool | DlmmPool
        if isinstance(s, CpPool):
            new_state, fill = cp_swap(s, forward, amount_in)
        else:
            new_state, fill = dlmm_swap(s, forward, amount_in, now_ts)
        return Pool(self.venue, new_state, self.version + 1), fill

    def min_input(self, mint_in: str, amount_out: int, now_ts: int) -> int:
        """The least gross input for which an exact-in swap returns at least `amount_out`, as a
        venue's exact-out instruction computes it; raises `InsufficientLiquidity` when no input
        can (the pool holds less than that)."""
        if amount_out <= 0:
            raise ValueError(f"amount_out must be positive, got {amount_out}")
        s, forward = self.state, self._forward(mint_in)
        if isinstance(s, CpPool):
            return cp_min_input(s, forward, amount_out)
        return _bisect_input(
            lambda x: dlmm_quote(s, forward, x, now_ts).amount_out,
            amount_out,
            self.max_rate(mint_in),
        )

    def swap_exact_out(
        self, mint_in: str, amount_out: int, now_ts: int
    ) -> tuple["Pool", SwapQuote]:
        """Deliver exactly `amount_out` for the least input (`min_input`): the pool after it and
        the fill. What the exact-in math would return above `amount_out` (a few base units of
        rounding) stays in the pool, as the venues' exact-out instructions leave it."""
        amount_in = self.min_input(mint_in, amount_out, now_ts)
        new_pool, fill = self.swap(mint_in, amount_in, now_ts)
        surplus = fill.amount_out - amount_out
        state = new_pool.state
        if surplus:
            forward = self._forward(mint_in)
            state = _give_back(state, forward, surplus)
        exact = SwapQuote(
            amount_in, amount_out, fill.fee_amount, fill.price_impact_pct, fill.bins_crossed
        )
        return Pool(self.venue, state, new_pool.version), exact

    def max_rate(self, mint_in: str) -> Decimal:
        """An upper bound on output base units per input base unit for any swap size: the spot
        price after the least fee the pool can charge (every fill is at or below it)."""
        s = self.state
        if isinstance(s, CpPool):
            fee = Decimal(s.fee_bps) / BPS_DENOMINATOR
        else:
            fee = Decimal(dlmm_base_fee_rate(s)) / FEE_PRECISION
        return self.spot_price(mint_in) * (1 - fee) * _RATE_SLACK

    def spot_price(self, mint_in: str) -> Decimal:
        """Output base units per input base unit at the current mid, before fees."""
        s, forward = self.state, self._forward(mint_in)
        return cp_spot_price(s, forward) if isinstance(s, CpPool) else dlmm_spot_price(s, forward)

    def repriced(self, price_second_per_first: Decimal, now_ts: int) -> "Pool":
        s = self.state
        new_state: CpPool | DlmmPool
        if isinstance(s, CpPool):
            new_state = cp_reprice(s, price_second_per_first)
        else:
            new_state = dlmm_reprice(s, price_second_per_first, now_ts)
        return Pool(self.venue, new_state, self.version + 1)

    def dumps(self) -> str:
        kind = "cp" if isinstance(self.state, CpPool) else "dlmm"
        return orjson.dumps(
            {
                "venue": self.venue,
                "type": kind,
                "version": self.version,
                "state": self.state.to_dict(),
            }
        ).decode()

    @classmethod
    def loads(cls, raw: bytes | str) -> "Pool":
        data: dict[str, Any] = orjson.loads(raw)
        state_cls = CpPool if data["type"] == "cp" else DlmmPool
        return cls(data["venue"], state_cls.from_dict(data["state"]), int(data["version"]))


# Spot prices are 50-digit Decimals (1/price rounds): a hair of slack keeps the bound a bound.
_RATE_SLACK = Decimal("1.000000000001")


def _bisect_input(out_for: Callable[[int], int], amount_out: int, max_rate: Decimal) -> int:
    """The least x with out_for(x) >= amount_out, for a non-decreasing `out_for` that raises
    `NothingOut` for inputs too small and `InsufficientLiquidity` for inputs larger than the
    pool can take. No x below amount_out / max_rate reaches it, so the search starts there;
    it then alternates interpolation (outputs are near linear over a small range, so a guess
    usually lands within a few units) with halving (so the bracket always shrinks)."""

    def value(x: int) -> int | None:
        """The output for x; None for an input that drains the pool (reaches any target)."""
        try:
            return out_for(x) if x > 0 else 0
        except NothingOut:
            return 0
        except InsufficientLiquidity:
            return None

    lo = max(0, int(Decimal(amount_out) / max_rate) - 1)
    v_lo = value(lo)
    if v_lo is None or v_lo >= amount_out:
        lo, v_lo = 0, 0
    step = max(1, lo // 64)
    hi, v_hi = lo + step, value(lo + step)
    while v_hi is not None and v_hi < amount_out:
        lo, v_lo, step = hi, v_hi, step * 2
        hi, v_hi = lo + step, value(lo + step)
    guess = True
    while hi - lo > 1:
        if guess and v_hi is not None and v_hi > v_lo:
            mid = lo + (amount_out - v_lo) * (hi - lo) // (v_hi - v_lo)
            mid = min(max(mid, lo + 1), hi - 1)
        else:
            mid = (lo + hi) // 2
        guess = not guess
        v = value(mid)
        if v is None or v >= amount_out:
            hi, v_hi = mid, v
            below = value(mid - 1)  # a guess that reaches is usually the answer: check it
            if below is not None and below < amount_out:
                lo, v_lo = mid - 1, below
        else:
            lo, v_lo = mid, v
    out_for(hi)  # InsufficientLiquidity when even the least draining input falls short
    return hi


def _give_back(state: CpPool | DlmmPool, forward: bool, surplus: int) -> CpPool | DlmmPool:
    """`state` with `surplus` of the output token returned (to the bin the swap ended in)."""
    if isinstance(state, CpPool):
        if forward:
            return replace(state, reserve_b=state.reserve_b + surplus)
        return replace(state, reserve_a=state.reserve_a + surplus)
    x, y = state.bins[state.active_id]
    back = (x, y + surplus) if forward else (x + surplus, y)
    return replace(state, bins={**state.bins, state.active_id: back})
