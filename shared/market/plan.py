"""A route as it will execute: hops in series, each split over one or more pools (legs), and
the guards each leg's instruction carries so that the order's own guard holds for the total.

How the per-leg guards are set (exact-in):
* Legs of the last hop carry minimums that sum to at least the route's `min_amount_out`
  (``ceil(leg quote * total minimum / total quote)`` each), so every leg meeting its minimum
  means the total meets the order's.
* Legs of an earlier hop must deliver what the next hop spends, which is fixed in its signed
  instructions (a venue program swaps the amount it is given): their minimum is their quote.
  A pool that moved against the order there fails the transaction with that venue's error and
  the order is routed again; one that moved in its favour leaves the surplus of the
  intermediate token in the engine's wallet.
Exact-out routes are one hop: each leg's instruction names its exact output and the most it
may spend (``floor(leg input * (1 + slippage))``), which sum to at most `max_amount_in`.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.market.routing import VenueQuote
from shared.market.tokens import Token, from_base_units
from shared.numbers import dec_str

BPS = 10_000


@dataclass(frozen=True, slots=True)
class Leg(VenueQuote):
    """One swap instruction of a route: a pool's quote, from `mint_in` to `mint_out`."""

    mint_in: str = ""
    mint_out: str = ""

    @classmethod
    def of(cls, quote: VenueQuote, mint_in: str, mint_out: str) -> "Leg":
        return cls(
            quote.pool,
            quote.amount_in,
            quote.amount_out,
            quote.fee_amount,
            quote.price_impact_pct,
            mint_in,
            mint_out,
        )


@dataclass(frozen=True, slots=True)
class LegGuard:
    """The amounts a leg's instruction carries. Exact-in: spend `amount_in`, receive at least
    `min_amount_out`. Exact-out: receive exactly `min_amount_out`, spend at most `amount_in`."""

    leg: Leg
    amount_in: int
    min_amount_out: int


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Hops in series; the legs of one hop split that hop's input between pools."""

    hops: tuple[tuple[Leg, ...], ...]
    exact_out: bool = False

    @property
    def legs(self) -> tuple[Leg, ...]:
        return tuple(leg for hop in self.hops for leg in hop)

    @property
    def amount_in(self) -> int:
        return sum(leg.amount_in for leg in self.hops[0])

    @property
    def amount_out(self) -> int:
        return sum(leg.amount_out for leg in self.hops[-1])

    @property
    def fee_amount(self) -> int:
        """Fees of the first hop, in the input token (later hops pay theirs in others)."""
        return sum(leg.fee_amount for leg in self.hops[0])

    @property
    def is_split(self) -> bool:
        return any(len(hop) > 1 for hop in self.hops)

    @property
    def is_multi_hop(self) -> bool:
        return len(self.hops) > 1

    @property
    def main_leg(self) -> Leg:
        """The leg that carries the largest share of the first hop (the route's venue)."""
        return max(self.hops[0], key=lambda leg: leg.amount_in)

    def min_amount_out(self, slippage_bps: int, floor_out: int = 0) -> int:
        """The least total output the transaction accepts: the quote less the slippage, and
        never less than `floor_out` (a limit or sniper order's own guard)."""
        if self.exact_out:
            return self.amount_out
        return max(self.amount_out * (BPS - slippage_bps) // BPS, floor_out)

    def max_amount_in(self, slippage_bps: int) -> int:
        """The most input the transaction may spend: the quote (exact-in) or the quote plus
        the slippage (exact-out)."""
        if not self.exact_out:
            return self.amount_in
        return sum(g.amount_in for g in self.guards(slippage_bps))

    def guards(self, slippage_bps: int, floor_out: int = 0) -> list[LegGuard]:
        """Each leg's instruction amounts, in execution order (see the module docstring)."""
        if self.exact_out:
            return [
                LegGuard(leg, leg.amount_in * (BPS + slippage_bps) // BPS, leg.amount_out)
                for leg in self.legs
            ]
        wanted, quoted = self.min_amount_out(slippage_bps, floor_out), self.amount_out
        guards = [
            LegGuard(leg, leg.amount_in, leg.amount_out) for hop in self.hops[:-1] for leg in hop
        ]
        guards += [
            LegGuard(leg, leg.amount_in, -(-leg.amount_out * wanted // quoted))
            for leg in self.hops[-1]
        ]
        return guards

    def to_event(self, tokens: dict[str, Token]) -> list[dict[str, Any]]:
        """`routePlan`: every leg in human units, with its share of the order's input."""
        legs = []
        for hop in self.hops:
            hop_in = sum(leg.amount_in for leg in hop)
            for leg in hop:
                t_in, t_out = tokens[leg.mint_in], tokens[leg.mint_out]
                share = Decimal(leg.amount_in * 100) / Decimal(hop_in)
                legs.append(
                    {
                        "dex": leg.dex,
                        "pool": leg.pool.address,
                        "poolKind": leg.pool.kind,
                        "tokenIn": t_in.symbol,
                        "tokenOut": t_out.symbol,
                        "amountIn": dec_str(from_base_units(t_in, leg.amount_in)),
                        "amountOut": dec_str(from_base_units(t_out, leg.amount_out)),
                        "percent": dec_str(share.quantize(Decimal("0.01"))),
                    }
                )
        return legs
