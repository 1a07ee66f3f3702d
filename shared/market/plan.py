"""A route as it will execute: hops in series, each split over one or more pools (legs), and
the guards each leg's instruction carries so that the order's own guard holds for the total.

How the per-leg guards are set (exact-in):
* Legs of the last hop carry minimums that sum to at least the route's `min_amount_out`
  (``ceil(leg quote * total minimum / total quote)`` each), so every leg meeting its minimum
  means the total meets the order's.
* A venue program swaps the amount its instruction names, so the next hop's inputs are fixed
  when the transaction is signed. Each leg of an earlier hop may deliver up to
  `HOP_SLIPPAGE_BPS` less than its quote (its minimum), and the next hop spends exactly the
  sum of those minimums: it is always funded, and concurrent fills that move a pool a little
  do not fail the route. The route is quoted, compared and guarded on those spent amounts, so
  the order is never promised what the tolerance holds back; what an earlier hop delivers
  above its minimum stays in the engine's wallet as the intermediate token.
Exact-out routes are one hop: each leg's instruction names its exact output and the most it
may spend (``floor(leg input * (1 + slippage))``), which sum to at most `max_amount_in`.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.market.routing import VenueQuote
from shared.market.tokens import TOKENS, Token, from_base_units
from shared.numbers import dec_str

BPS = 10_000
HOP_SLIPPAGE_BPS = 10  # what an intermediate hop may deliver below its quote


def hop_minimum(quoted_out: int) -> int:
    """The least an intermediate leg may deliver: what the next hop of its route spends."""
    return quoted_out * (BPS - HOP_SLIPPAGE_BPS) // BPS


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
            LegGuard(leg, leg.amount_in, hop_minimum(leg.amount_out))
            for hop in self.hops[:-1]
            for leg in hop
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
                        "amountIn": _human(t_in, leg.amount_in),
                        "amountOut": _human(t_out, leg.amount_out),
                        "percent": dec_str(share.quantize(Decimal("0.01"))),
                    }
                )
        return legs


@dataclass(frozen=True, slots=True)
class Decision:
    """The route to take, the best single pool it was compared with, and why."""

    plan: RoutePlan
    best_single: VenueQuote | None
    quotes: list[VenueQuote] = field(default_factory=list)  # best direct pool per venue
    reason: str = ""

    @property
    def improvement_bps(self) -> Decimal:
        """How much better than the best single pool, in bps of its output (exact-in) or of
        its input (exact-out); 0 when there is no single pool or the route is that pool."""
        single = self.best_single
        if single is None:
            return Decimal(0)
        if self.plan.exact_out:
            saved = single.amount_in - self.plan.amount_in
            return Decimal(saved * BPS) / Decimal(single.amount_in)
        gained = self.plan.amount_out - single.amount_out
        return Decimal(gained * BPS) / Decimal(single.amount_out)

    def to_event(
        self, token_in: Token, token_out: Token, slippage_bps: int, floor_out: int = 0
    ) -> dict[str, Any]:
        """The decision as `/api/quotes` and the `routing` event show it."""
        plan, single, exact_out = self.plan, self.best_single, self.plan.exact_out
        tokens = {t.mint: t for t in (*TOKENS, token_in, token_out)}
        return {
            "swapMode": "ExactOut" if exact_out else "ExactIn",
            "amountIn": _human(token_in, plan.amount_in),
            "amountOut": _human(token_out, plan.amount_out),
            "minAmountOut": _human(token_out, plan.min_amount_out(slippage_bps, floor_out)),
            "maxAmountIn": _human(token_in, plan.max_amount_in(slippage_bps)),
            "quotes": [
                q.to_event(token_in, token_out, slippage_bps, exact_out) for q in self.quotes
            ],
            "chosen": plan.main_leg.dex,
            "reason": self.reason,
            "routePlan": plan.to_event(tokens),
            "bestSingle": None
            if single is None
            else single.to_event(token_in, token_out, slippage_bps, exact_out),
            "improvementBps": dec_str(self.improvement_bps.quantize(Decimal("0.01"))),
        }


def _human(token: Token, amount: int) -> str:
    return dec_str(from_base_units(token, amount))
