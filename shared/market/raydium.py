"""Raydium constant-product pools (AMM v4 and CPMM): quote, swap and reprice.

The swap math is Raydium AMM v4's ``swap_base_in``: the trade fee is taken from the input and
rounded up, then ``out = floor(R_out * in_after_fee / (R_in + in_after_fee))``. The whole gross
input (fee included) is added to the input reserve, so the fee stays with the liquidity providers
and ``reserve_a * reserve_b`` never decreases.
"""

from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Any

from shared.market.types import InsufficientLiquidity, NothingOut, SwapQuote

RAYDIUM_AMM_V4 = "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8"
RAYDIUM_CPMM = "CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C"
AMM_V4_FEE_BPS = 25
CPMM_FEE_TIERS_BPS = (25, 100, 200, 400)
BPS_DENOMINATOR = 10_000


@dataclass(frozen=True, slots=True)
class CpPool:
    """A constant-product pool's state. Reserves are base units; prices are b per a."""

    address: str
    program_id: str
    mint_a: str
    mint_b: str
    reserve_a: int
    reserve_b: int
    fee_bps: int

    def __post_init__(self) -> None:
        if self.reserve_a < 0 or self.reserve_b < 0:
            raise ValueError("reserves must be non-negative")
        if not 0 <= self.fee_bps < BPS_DENOMINATOR:
            raise ValueError(f"fee_bps must be in [0, {BPS_DENOMINATOR}), got {self.fee_bps}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (reserves stay ints) that `from_dict` turns back into this pool."""
        return {
            "address": self.address,
            "program_id": self.program_id,
            "mint_a": self.mint_a,
            "mint_b": self.mint_b,
            "reserve_a": self.reserve_a,
            "reserve_b": self.reserve_b,
            "fee_bps": self.fee_bps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CpPool":
        """Rebuild a pool from `to_dict` output."""
        return cls(
            address=str(data["address"]),
            program_id=str(data["program_id"]),
            mint_a=str(data["mint_a"]),
            mint_b=str(data["mint_b"]),
            reserve_a=int(data["reserve_a"]),
            reserve_b=int(data["reserve_b"]),
            fee_bps=int(data["fee_bps"]),
        )


def _reserves(pool: CpPool, a_to_b: bool) -> tuple[int, int]:
    return (pool.reserve_a, pool.reserve_b) if a_to_b else (pool.reserve_b, pool.reserve_a)


def cp_spot_price(pool: CpPool, a_to_b: bool) -> Decimal:
    """Output base units per input base unit for an infinitesimal trade, before the fee."""
    reserve_in, reserve_out = _reserves(pool, a_to_b)
    if reserve_in == 0 or reserve_out == 0:
        raise InsufficientLiquidity(f"pool {pool.address} has an empty reserve")
    return Decimal(reserve_out) / Decimal(reserve_in)


def cp_quote(pool: CpPool, a_to_b: bool, amount_in: int) -> SwapQuote:
    """Quote an exact-in swap of `amount_in` base units (gross) without changing the pool.

    Raises ValueError for a non-positive amount and InsufficientLiquidity when the output would
    round down to zero (the trade is too small or the pool is empty).
    """
    if amount_in <= 0:
        raise ValueError(f"amount_in must be positive, got {amount_in}")
    reserve_in, reserve_out = _reserves(pool, a_to_b)
    if reserve_in == 0 or reserve_out == 0:
        raise InsufficientLiquidity(f"pool {pool.address} has an empty reserve")
    # Ceil so that dust trades cannot dodge the fee.
    fee = -(-amount_in * pool.fee_bps // BPS_DENOMINATOR)
    in_after_fee = amount_in - fee
    amount_out = reserve_out * in_after_fee // (reserve_in + in_after_fee)
    if amount_out == 0:
        raise NothingOut(f"pool {pool.address} returns nothing for {amount_in}")
    # amount_out / (in_after_fee * R_out / R_in), exact integers until the one division.
    filled_vs_spot = Decimal(amount_out * reserve_in) / Decimal(in_after_fee * reserve_out)
    return SwapQuote(
        amount_in=amount_in,
        amount_out=amount_out,
        fee_amount=fee,
        price_impact_pct=(1 - filled_vs_spot) * 100,
    )


def cp_min_input(pool: CpPool, a_to_b: bool, amount_out: int) -> int:
    """The least gross input for which `cp_quote` returns at least `amount_out` (AMM v4's
    ``swap_base_out``): the net input ``ceil(R_in * out / (R_out - out))``, grossed up so that
    ``in - ceil(in * fee)`` still reaches it. Raises InsufficientLiquidity if the pool holds
    no more than `amount_out`."""
    reserve_in, reserve_out = _reserves(pool, a_to_b)
    if amount_out >= reserve_out or reserve_in == 0:
        raise InsufficientLiquidity(f"pool {pool.address} holds less than {amount_out}")
    net = -(-reserve_in * amount_out // (reserve_out - amount_out))
    # in - ceil(in * fee / B) == floor(in * (B - fee) / B), so this is the least such input.
    return -(-net * BPS_DENOMINATOR // (BPS_DENOMINATOR - pool.fee_bps))


def cp_swap(pool: CpPool, a_to_b: bool, amount_in: int) -> tuple[CpPool, SwapQuote]:
    """Execute `cp_quote` and return the pool after it; the fee stays in the input reserve."""
    quote = cp_quote(pool, a_to_b, amount_in)
    if a_to_b:
        new_pool = replace(
            pool,
            reserve_a=pool.reserve_a + amount_in,
            reserve_b=pool.reserve_b - quote.amount_out,
        )
    else:
        new_pool = replace(
            pool,
            reserve_a=pool.reserve_a - quote.amount_out,
            reserve_b=pool.reserve_b + amount_in,
        )
    return new_pool, quote


def _reserves_for(k: Decimal, price_b_per_a: Decimal) -> tuple[int, int]:
    """Reserves with product ~k and ratio ~price: a = sqrt(k / p), b = a * p."""
    with localcontext(prec=50):
        reserve_a = (k / price_b_per_a).sqrt()
        reserve_b = reserve_a * price_b_per_a
        return max(1, int(reserve_a.to_integral_value())), max(
            1, int(reserve_b.to_integral_value())
        )


def cp_reprice(pool: CpPool, price_b_per_a: Decimal) -> CpPool:
    """Move the pool's mid price to `price_b_per_a` (b base units per a base unit), keeping
    ``k = reserve_a * reserve_b`` within rounding; this is where arbitrage would leave the pool.

    The resulting `cp_spot_price(pool, True)` is within rounding of the target (well under 0.1%
    for any pool with more than a few thousand base units on each side).
    """
    if price_b_per_a <= 0:
        raise ValueError(f"price must be positive, got {price_b_per_a}")
    k = Decimal(pool.reserve_a) * Decimal(pool.reserve_b)
    reserve_a, reserve_b = _reserves_for(k, price_b_per_a)
    return replace(pool, reserve_a=reserve_a, reserve_b=reserve_b)


def cp_new(
    address: str,
    program_id: str,
    mint_a: str,
    mint_b: str,
    fee_bps: int,
    price_b_per_a: Decimal,
    reserve_b: int,
) -> CpPool:
    """A pool holding `reserve_b` of token b and the amount of a worth the same at
    `price_b_per_a` (b base units per a base unit)."""
    if price_b_per_a <= 0:
        raise ValueError(f"price must be positive, got {price_b_per_a}")
    if reserve_b <= 0:
        raise ValueError(f"reserve_b must be positive, got {reserve_b}")
    with localcontext(prec=50):
        reserve_a = max(1, int((Decimal(reserve_b) / price_b_per_a).to_integral_value()))
    return CpPool(address, program_id, mint_a, mint_b, reserve_a, reserve_b, fee_bps)
