"""Meteora DLMM (liquidity book) pools: bin prices, dynamic fees, quote, swap and reprice.

The swap walk, the fee formulas and the volatility bookkeeping follow the DLMM program
(``lb_clmm``: ``Bin::swap``, ``LbPair::update_references`` / ``update_volatility_accumulator`` /
``compute_fee`` / ``compute_fee_from_amount``), with two deliberate differences:

* Bin prices are ``Decimal`` values rounded to `PRICE_DIGITS` significant digits instead of the
  program's Q64.64 integers. Every amount is then computed *exactly* from that Decimal (as an
  integer ratio), rounding in the same direction as the program, so results are deterministic
  and agree with the program to ~1e-18 relative.
* Fees stay in the bin: the whole gross input of a bin joins its input-side reserve. The program
  books fees separately for liquidity providers to claim; here pool value simply grows, as it does
  in a Raydium pool, so the two venues are comparable.
"""

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from functools import lru_cache
from typing import Any, NamedTuple

from shared.market.types import InsufficientLiquidity, NothingOut, SwapQuote

METEORA_DLMM = "LBUZKhRxPF3XUpBCjp4YzTKgLccjZhTSDM9YuVaPwxo"

BASIS_POINT_MAX = 10_000
FEE_PRECISION = 1_000_000_000  # fee rates are in units of 1e-9
MAX_FEE_RATE = 100_000_000  # 10 %
PRICE_DIGITS = 50

# Parameters of a typical volatile-pair preset; the base fee is chosen per bin step.
DEFAULT_BASE_FEE_RATE = 2_000_000  # 0.20 %
DEFAULT_FILTER_PERIOD_S = 30
DEFAULT_DECAY_PERIOD_S = 600
DEFAULT_REDUCTION_FACTOR = 5_000
DEFAULT_VARIABLE_FEE_CONTROL = 40_000
DEFAULT_MAX_VOLATILITY_ACCUMULATOR = 350_000


@dataclass(frozen=True, slots=True)
class DlmmPool:
    """A DLMM pool's state. Prices are y base units per x base unit; bins below `active_id`
    hold y, bins above hold x, and the active bin may hold both. Treat `bins` as read-only:
    every operation returns a new pool."""

    address: str
    mint_x: str
    mint_y: str
    bin_step: int  # basis points between neighbouring bins
    active_id: int
    bins: dict[int, tuple[int, int]]  # bin id -> (reserve_x, reserve_y)
    base_factor: int
    filter_period: int = DEFAULT_FILTER_PERIOD_S
    decay_period: int = DEFAULT_DECAY_PERIOD_S
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR
    variable_fee_control: int = DEFAULT_VARIABLE_FEE_CONTROL
    max_volatility_accumulator: int = DEFAULT_MAX_VOLATILITY_ACCUMULATOR
    volatility_accumulator: int = 0
    volatility_reference: int = 0
    index_reference: int = 0
    last_update_ts: int = 0  # unix seconds of the last swap

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (ints stay ints, bin ids become string keys) for `from_dict`."""
        return {
            "address": self.address,
            "mint_x": self.mint_x,
            "mint_y": self.mint_y,
            "bin_step": self.bin_step,
            "active_id": self.active_id,
            "bins": {str(i): [x, y] for i, (x, y) in sorted(self.bins.items())},
            "base_factor": self.base_factor,
            "filter_period": self.filter_period,
            "decay_period": self.decay_period,
            "reduction_factor": self.reduction_factor,
            "variable_fee_control": self.variable_fee_control,
            "max_volatility_accumulator": self.max_volatility_accumulator,
            "volatility_accumulator": self.volatility_accumulator,
            "volatility_reference": self.volatility_reference,
            "index_reference": self.index_reference,
            "last_update_ts": self.last_update_ts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DlmmPool":
        """Rebuild a pool from `to_dict` output (int or string bin ids are both accepted)."""
        fields = {k: int(v) for k, v in data.items() if k not in _NON_INT_FIELDS}
        return cls(
            address=str(data["address"]),
            mint_x=str(data["mint_x"]),
            mint_y=str(data["mint_y"]),
            bins={int(i): (int(xy[0]), int(xy[1])) for i, xy in data["bins"].items()},
            **fields,
        )


_NON_INT_FIELDS = frozenset({"address", "mint_x", "mint_y", "bins"})


# --- prices -----------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 16)
def _bin_price(bin_step: int, bin_id: int) -> Decimal:
    with localcontext(prec=PRICE_DIGITS):
        return (Decimal(BASIS_POINT_MAX + bin_step) / BASIS_POINT_MAX) ** bin_id


@lru_cache(maxsize=1 << 16)
def _price_ratio(bin_step: int, bin_id: int) -> tuple[int, int]:
    return _bin_price(bin_step, bin_id).as_integer_ratio()


def bin_price(bin_step: int, bin_id: int) -> Decimal:
    """``(1 + bin_step / 10000) ** bin_id``: y base units per x base unit in that bin, rounded
    to `PRICE_DIGITS` significant digits. All swap math uses exactly this value."""
    return _bin_price(bin_step, bin_id)


def bin_id_for_price(bin_step: int, price: Decimal) -> int:
    """The bin whose price is nearest `price` (y base units per x base unit) in log space, so
    its price is within half a bin step of `price`."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    with localcontext(prec=PRICE_DIGITS):
        step = (Decimal(BASIS_POINT_MAX + bin_step) / BASIS_POINT_MAX).ln()
        return int((price.ln() / step).to_integral_value(ROUND_HALF_EVEN))


def dlmm_spot_price(pool: DlmmPool, x_to_y: bool) -> Decimal:
    """Output base units per input base unit for an infinitesimal trade, before fees: the price
    of the first bin, from the active one in the swap direction, that holds the output token.

    Raises InsufficientLiquidity when no bin in that direction holds any output token.
    """
    if not pool.bins:
        raise InsufficientLiquidity(f"pool {pool.address} has no bins")
    out_index = 1 if x_to_y else 0
    ids = (
        range(pool.active_id, min(pool.bins) - 1, -1)
        if x_to_y
        else range(pool.active_id, max(pool.bins) + 1)
    )
    for bin_id in ids:
        if pool.bins.get(bin_id, (0, 0))[out_index] > 0:
            price = bin_price(pool.bin_step, bin_id)
            if x_to_y:
                return price
            with localcontext(prec=PRICE_DIGITS):
                return 1 / price
    raise InsufficientLiquidity(f"pool {pool.address} holds no output token in that direction")


# --- fees -------------------------------------------------------------------------------------


def dlmm_base_fee_rate(pool: DlmmPool) -> int:
    """The static fee rate in 1e-9 units: ``base_factor * bin_step * 10``."""
    return pool.base_factor * pool.bin_step * 10


def dlmm_fee_rate(pool: DlmmPool, volatility_accumulator: int | None = None) -> int:
    """Total fee rate in 1e-9 units (capped at 10 %) for a volatility accumulator value,
    by default the pool's current one.

    The variable part is ``ceil(variable_fee_control * (v_a * bin_step)**2 / 1e11)``.
    """
    v_a = pool.volatility_accumulator if volatility_accumulator is None else volatility_accumulator
    variable = -(-pool.variable_fee_control * (v_a * pool.bin_step) ** 2 // 100_000_000_000)
    return min(dlmm_base_fee_rate(pool) + variable, MAX_FEE_RATE)


def _references(pool: DlmmPool, now_ts: int) -> tuple[int, int]:
    """(volatility_reference, index_reference) as a swap at `now_ts` sees them.

    Swaps less than `filter_period` apart share one reference, so a burst of trades keeps
    accumulating volatility; after that the reference decays, and resets after `decay_period`.
    """
    elapsed = now_ts - pool.last_update_ts
    if elapsed < pool.filter_period:
        return pool.volatility_reference, pool.index_reference
    if elapsed < pool.decay_period:
        reference = pool.volatility_accumulator * pool.reduction_factor // BASIS_POINT_MAX
    else:
        reference = 0
    return reference, pool.active_id


# --- swaps ------------------------------------------------------------------------------------


def _fill_bin(
    reserve_out: int, ratio: tuple[int, int], x_to_y: bool, amount_left: int, fee_rate: int
) -> tuple[int, int, int]:
    """Swap up to `amount_left` (gross) against one bin: (input used, output, fee)."""
    num, den = ratio  # price = num / den, y per x
    out_num, out_den = (num, den) if x_to_y else (den, num)
    # Input (before fee) that buys the whole output reserve, rounded against the trader.
    max_in = -(-reserve_out * out_den // out_num)
    # Fee on a net amount: net * rate / (1 - rate), rounded up, as the program charges it.
    max_fee = -(-max_in * fee_rate // (FEE_PRECISION - fee_rate))
    if amount_left > max_in + max_fee:
        return max_in + max_fee, reserve_out, max_fee
    fee = -(-amount_left * fee_rate // FEE_PRECISION)
    out = (amount_left - fee) * out_num // out_den
    return amount_left, min(out, reserve_out), fee


class _Walk(NamedTuple):
    """A swap's walk over the bins: its quote and what it leaves behind."""

    quote: SwapQuote
    active_id: int
    changed: dict[int, tuple[int, int]]
    volatility_accumulator: int
    volatility_reference: int
    index_reference: int


def _execute(
    pool: DlmmPool, x_to_y: bool, amount_in: int, now_ts: int
) -> tuple[DlmmPool, SwapQuote]:
    walk = _walk(pool, x_to_y, amount_in, now_ts)
    new_pool = replace(
        pool,
        active_id=walk.active_id,
        bins={**pool.bins, **walk.changed},
        volatility_accumulator=walk.volatility_accumulator,
        volatility_reference=walk.volatility_reference,
        index_reference=walk.index_reference,
        last_update_ts=now_ts,
    )
    return new_pool, walk.quote


def _walk(pool: DlmmPool, x_to_y: bool, amount_in: int, now_ts: int) -> _Walk:
    if amount_in <= 0:
        raise ValueError(f"amount_in must be positive, got {amount_in}")
    if not pool.bins:
        raise InsufficientLiquidity(f"pool {pool.address} has no bins")
    v_ref, i_ref = _references(pool, now_ts)
    last_id = min(pool.bins) if x_to_y else max(pool.bins)
    step = -1 if x_to_y else 1
    active = pool.active_id
    v_acc = pool.volatility_accumulator
    left, total_out, total_fee = amount_in, 0, 0
    spot: tuple[int, int] | None = None  # output per input at the first bin that fills
    changed: dict[int, tuple[int, int]] = {}
    while True:
        # Each bin visited raises the accumulator by its distance from the reference bin.
        v_acc = min(pool.max_volatility_accumulator, v_ref + abs(i_ref - active) * BASIS_POINT_MAX)
        x, y = pool.bins.get(active, (0, 0))
        reserve_out = y if x_to_y else x
        if reserve_out > 0:
            ratio = _price_ratio(pool.bin_step, active)
            if spot is None:
                spot = ratio if x_to_y else (ratio[1], ratio[0])
            used, out, fee = _fill_bin(reserve_out, ratio, x_to_y, left, dlmm_fee_rate(pool, v_acc))
            changed[active] = (x + used, y - out) if x_to_y else (x - out, y + used)
            left, total_out, total_fee = left - used, total_out + out, total_fee + fee
        if left == 0:
            break
        if (active - last_id) * step >= 0:  # at or past the last bin in this direction
            raise InsufficientLiquidity(f"pool {pool.address} ran out of bins")
        active += step
    if total_out == 0 or spot is None:
        raise NothingOut(f"pool {pool.address} returns nothing for {amount_in}")
    filled_vs_spot = Decimal(total_out * spot[1]) / Decimal((amount_in - total_fee) * spot[0])
    quote = SwapQuote(
        amount_in=amount_in,
        amount_out=total_out,
        fee_amount=total_fee,
        price_impact_pct=(1 - filled_vs_spot) * 100,
        bins_crossed=abs(active - pool.active_id),
    )
    return _Walk(quote, active, changed, v_acc, v_ref, i_ref)


def dlmm_quote(pool: DlmmPool, x_to_y: bool, amount_in: int, now_ts: int) -> SwapQuote:
    """Quote an exact-in swap of `amount_in` base units (gross) at unix time `now_ts`.

    Walks bins from the active one (x->y towards lower ids, y->x towards higher), paying each
    bin's dynamic fee. Raises ValueError for a non-positive amount and InsufficientLiquidity if
    the bins run out before the input is used up, or if the output rounds to zero.
    """
    return _walk(pool, x_to_y, amount_in, now_ts).quote  # a quote leaves the pool as it is


def dlmm_swap(
    pool: DlmmPool, x_to_y: bool, amount_in: int, now_ts: int
) -> tuple[DlmmPool, SwapQuote]:
    """Execute `dlmm_quote` and return the pool after it: new active bin, reserves (fees stay
    in the bins they were paid to) and volatility state."""
    return _execute(pool, x_to_y, amount_in, now_ts)


# --- construction -----------------------------------------------------------------------------


def _layout(
    bin_step: int, active_id: int, per_bin_y: int, each_side: int
) -> dict[int, tuple[int, int]]:
    """Uniform ("spot") liquidity: each bin below the active one holds `per_bin_y` of y, each
    bin above holds x worth `per_bin_y` at its own price, and the active bin holds half each."""
    if per_bin_y < 2:
        raise ValueError("too little liquidity to spread over that many bins")

    def x_worth(y_amount: int, bin_id: int) -> int:
        num, den = _price_ratio(bin_step, bin_id)
        return y_amount * den // num

    half = per_bin_y // 2
    bins = {active_id: (x_worth(half, active_id), half)}
    for i in range(1, each_side + 1):
        bins[active_id - i] = (0, per_bin_y)
        bins[active_id + i] = (x_worth(per_bin_y, active_id + i), 0)
    return bins


def dlmm_new(
    address: str,
    mint_x: str,
    mint_y: str,
    bin_step: int,
    price_y_per_x: Decimal,
    reserve_y_total: int,
    bins_each_side: int = 30,
    base_factor: int | None = None,
) -> DlmmPool:
    """A pool centred on the bin nearest `price_y_per_x` (y base units per x base unit), with
    about `reserve_y_total` of y spread evenly over the active bin and `bins_each_side` bins
    below it, and the same value of x over the active bin and as many bins above.

    `base_factor` defaults to the one giving a `DEFAULT_BASE_FEE_RATE` (0.20 %) base fee.
    """
    if bin_step <= 0 or bins_each_side < 0:
        raise ValueError("bin_step must be positive and bins_each_side non-negative")
    active_id = bin_id_for_price(bin_step, price_y_per_x)
    if base_factor is None:
        base_factor = max(1, DEFAULT_BASE_FEE_RATE // (bin_step * 10))
    return DlmmPool(
        address=address,
        mint_x=mint_x,
        mint_y=mint_y,
        bin_step=bin_step,
        active_id=active_id,
        # y sits in `bins_each_side` full bins plus half the active bin.
        bins=_layout(
            bin_step, active_id, 2 * reserve_y_total // (2 * bins_each_side + 1), bins_each_side
        ),
        base_factor=base_factor,
        index_reference=active_id,
    )


def dlmm_reprice(pool: DlmmPool, price_y_per_x: Decimal, now_ts: int) -> DlmmPool:
    """Re-centre the pool's liquidity on the bin nearest `price_y_per_x`, with the same number
    of bins and the same total value within rounding (x valued at the new active bin's price).

    This stands in for arbitrageurs moving the price, so the fee state is left as it is: the next
    swap sees the move through its distance from `index_reference`, as it would on chain, and a
    drift tick does not keep resetting the filter window. `now_ts` does not change the result.
    Raises ValueError if the pool holds too little value to fill its bins.
    """
    if price_y_per_x <= 0:
        raise ValueError(f"price must be positive, got {price_y_per_x}")
    del now_ts
    active_id = bin_id_for_price(pool.bin_step, price_y_per_x)
    num, den = _price_ratio(pool.bin_step, active_id)
    total_x = sum(x for x, _ in pool.bins.values())
    total_y = sum(y for _, y in pool.bins.values())
    value_y = total_y + total_x * num // den
    each_side = (len(pool.bins) - 1) // 2
    # Value of the layout per unit of `per_bin_y`: each_side y bins, the active bin, and x bins
    # each worth (1 + step)^-i of a y bin at the active price.
    with localcontext(prec=PRICE_DIGITS):
        weight = each_side + 1 + sum(bin_price(pool.bin_step, -i) for i in range(1, each_side + 1))
        per_bin_y = int(value_y / weight)
    bins = _layout(pool.bin_step, active_id, per_bin_y, each_side)
    return replace(pool, active_id=active_id, bins=bins)
