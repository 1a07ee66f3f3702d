"""Results and errors shared by every venue's math."""

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class SwapQuote:
    """The outcome of an exact-in swap against one pool.

    `price_impact_pct` is ``(1 - amount_out / ((amount_in - fee_amount) * spot_before)) * 100``:
    how much worse the fill was than the pre-trade spot price, fees excluded. It is never negative.
    """

    amount_in: int  # base units of the input token, gross (fee included)
    amount_out: int  # base units of the output token, net
    fee_amount: int  # base units of the input token
    price_impact_pct: Decimal
    bins_crossed: int = 0  # DLMM only: how many times the active bin moved during the swap


class InsufficientLiquidity(Exception):
    """The pool cannot fill the swap: it would return nothing, or its liquidity runs out."""


class NothingOut(InsufficientLiquidity):
    """The swap is too small: its output rounds down to nothing."""
