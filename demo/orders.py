"""The orders a demo run places: pairs and sizes, and the prices of the optional limit order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from demo.values import plain, to_decimal

DEFAULT_PAIRS = (
    "SOL/USDC:1.5",
    "USDC/SOL:250",
    "BTC/BONK:0.05",  # no pool trades the pair: a route through USDC and SOL
    "SOL/USDT:3",
    "SOL/USDC:2500",  # large: usually split over the pair's pools
    "ETH/USDC:0.4",
    "BONK/SOL:5000000",
    "BTC/USDC:0.02",
    "USDT/SOL:75",
    "USDC/ETH:500",
)


# Later rounds over the pair list use other sizes, so repeated pairs still differ.
SIZE_FACTORS = (Decimal(1), Decimal("0.5"), Decimal(2), Decimal("0.25"))


# Just above the market: the order visibly waits, and the drifting market usually reaches it.
LIMIT_PREMIUM = Decimal("0.0005")


LIMIT_EXPIRY_S = 120


@dataclass(frozen=True)
class OrderSpec:
    """One order the demo places; `extra` overrides or adds request fields (limitPrice, mint)."""

    kind: str
    token_in: str
    token_out: str
    amount_in: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False  # an engine feature that may not exist yet: 400/404 means "skip"
    launch_mint: str | None = None  # sniper: launch this mint once the order is waiting

    def body(self, slippage_bps: int, client_order_id: str) -> dict[str, Any]:
        """The POST /api/orders/execute request body."""
        return {
            "type": self.kind,
            "tokenIn": self.token_in,
            "tokenOut": self.token_out,
            "amountIn": self.amount_in,  # a decimal string: never rounded through a float
            "slippageBps": slippage_bps,
            "clientOrderId": client_order_id,
            **self.extra,
        }


def parse_pair(text: str) -> OrderSpec:
    """`IN/OUT[:AMOUNT]`, e.g. `SOL/USDC:1.5`, as a market order (amount defaults to 1)."""
    pair, _, amount = text.partition(":")
    token_in, sep, token_out = pair.partition("/")
    if not sep or not token_in.strip() or not token_out.strip():
        raise ValueError(f"expected IN/OUT[:AMOUNT], got {text!r}")
    value = to_decimal(amount or "1")
    if value is None or value <= 0:
        raise ValueError(f"amount must be a positive number, got {amount!r}")
    return OrderSpec("market", token_in.strip().upper(), token_out.strip().upper(), plain(value))


def market_specs(pairs: Sequence[OrderSpec], count: int) -> list[OrderSpec]:
    """`count` orders cycling through `pairs`, with another size on each new round."""
    specs = []
    for i in range(count):
        base = pairs[i % len(pairs)]
        factor = SIZE_FACTORS[(i // len(pairs)) % len(SIZE_FACTORS)]
        amount = plain(Decimal(base.amount_in) * factor)
        specs.append(OrderSpec(base.kind, base.token_in, base.token_out, amount))
    return specs


def best_quote_price(payload: Mapping[str, Any]) -> Decimal | None:
    """The price of the route GET /api/quotes would take; from an engine without routes, that
    of the venue it would choose (else the best one quoted)."""
    routed_in, routed_out = (
        to_decimal(payload.get("amountIn")),
        to_decimal(payload.get("amountOut")),
    )
    if payload.get("routePlan") and routed_in and routed_out is not None:
        return routed_out / routed_in
    quotes = [q for q in payload.get("quotes") or [] if isinstance(q, Mapping)]
    chosen = [q for q in quotes if q.get("dex") == payload.get("chosen")]
    prices = [p for q in chosen or quotes if (p := to_decimal(q.get("price"))) is not None]
    return max(prices, default=None)


def limit_price(best: Decimal) -> str:
    """A minimum price a little above the market, so the order visibly waits for its trigger."""
    return plain((best * (1 + LIMIT_PREMIUM)).quantize(Decimal("0.000001")))


def trigger_expiry_s(timeout_s: float) -> int:
    """Expire waiting orders before the demo gives up on them, so they still end terminal."""
    return max(5, min(LIMIT_EXPIRY_S, int(timeout_s) - 10))
