"""Best-venue routing: compare what each venue would really deliver and explain the choice."""

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from shared.market.pools import VENUE_NAMES, Pool
from shared.market.tokens import Token, from_base_units
from shared.numbers import dec_str

BPS = 10_000
# A pool that would move this much to fill the order cannot fill it in any useful sense (a
# constant-product pool never runs out, it just gets absurd): routers refuse such quotes.
MAX_PRICE_IMPACT_PCT = Decimal(50)


@dataclass(frozen=True, slots=True)
class VenueQuote:
    """The best pool of one venue for an exact-in swap, net of fees and price impact."""

    pool: Pool
    amount_in: int
    amount_out: int
    fee_amount: int
    price_impact_pct: Decimal

    @property
    def dex(self) -> str:
        return self.pool.venue

    def min_amount_out(self, slippage_bps: int) -> int:
        """The least output the transaction will accept: quote * (1 - slippage)."""
        return self.amount_out * (BPS - slippage_bps) // BPS

    def price(self, token_in: Token, token_out: Token) -> Decimal:
        """Executed-price-to-be in human units (tokenOut per tokenIn)."""
        return human_price(token_in, token_out, self.amount_in, self.amount_out)

    def to_event(
        self, token_in: Token, token_out: Token, slippage_bps: int, exact_out: bool = False
    ) -> dict[str, Any]:
        """The quote in human units. Exact-out: `amountOut` is exact (so is the minimum) and
        `maxAmountIn` is the input plus the slippage."""
        minimum = self.amount_out if exact_out else self.min_amount_out(slippage_bps)
        event = {
            "dex": self.dex,
            "pool": self.pool.address,
            "poolKind": self.pool.kind,
            "amountIn": dec_str(from_base_units(token_in, self.amount_in)),
            "amountOut": dec_str(from_base_units(token_out, self.amount_out)),
            "price": str(self.price(token_in, token_out)),
            "feeAmount": dec_str(from_base_units(token_in, self.fee_amount)),
            "priceImpactPct": str(self.price_impact_pct.quantize(Decimal("0.0001"))),
            "minAmountOut": dec_str(from_base_units(token_out, minimum)),
        }
        if exact_out:
            most = self.amount_in * (BPS + slippage_bps) // BPS
            event["maxAmountIn"] = dec_str(from_base_units(token_in, most))
        return event


@dataclass(frozen=True, slots=True)
class Route:
    chosen: VenueQuote
    quotes: list[VenueQuote]  # best pool per venue, chosen first
    reason: str


def human_price(token_in: Token, token_out: Token, amount_in: int, amount_out: int) -> Decimal:
    """tokenOut per tokenIn in human units, to 10 significant-ish places."""
    raw = from_base_units(token_out, amount_out) / from_base_units(token_in, amount_in)
    return raw.quantize(Decimal(1).scaleb(-_price_places(raw)), rounding=ROUND_DOWN).normalize()


def _price_places(value: Decimal) -> int:
    # Keep ~10 significant digits whatever the magnitude (BONK per SOL vs SOL per BONK).
    return max(0, 10 - value.adjusted() - 1)


def best_per_venue(quotes: list[VenueQuote]) -> list[VenueQuote]:
    """The highest-output pool of each venue, best venue first."""
    best: dict[str, VenueQuote] = {}
    for q in quotes:
        if q.dex not in best or q.amount_out > best[q.dex].amount_out:
            best[q.dex] = q
    return sorted(best.values(), key=lambda q: q.amount_out, reverse=True)


def choose_route(
    quotes: list[VenueQuote], token_out: Token, failed: dict[str, str]
) -> Route | None:
    """Pick the venue with the highest net output; None when no venue can fill the order.

    `failed` maps venues that could not quote to why, so the reason can say so.
    """
    ranked = best_per_venue(quotes)
    if not ranked:
        return None
    chosen = ranked[0]
    out = f"{dec_str(from_base_units(token_out, chosen.amount_out))} {token_out.symbol}"
    name = f"{VENUE_NAMES[chosen.dex]} {chosen.pool.kind}"
    if len(ranked) > 1:
        other = ranked[1]
        gain = Decimal(chosen.amount_out - other.amount_out) * 100 / Decimal(other.amount_out)
        reason = (
            f"{name} returns {out} vs {VENUE_NAMES[other.dex]} {other.pool.kind} "
            f"{dec_str(from_base_units(token_out, other.amount_out))} {token_out.symbol} "
            f"(+{gain.quantize(Decimal('0.01'))}% net of fees and price impact)"
        )
    else:
        why = "; ".join(f"{VENUE_NAMES.get(v, v)}: {e}" for v, e in failed.items()) or "no pool"
        reason = f"{name} returns {out}; only venue able to fill ({why})"
    return Route(chosen=chosen, quotes=ranked, reason=reason)
