"""One order's state as the demo sees it, fed by the event dicts the server sends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from demo.orders import OrderSpec
from demo.values import text_of, to_decimal, to_int

STEPS = ("pending", "routing", "building", "submitted", "confirmed")


TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})


# Client-side states: the server never sends these.
SUBMITTING, REJECTED, UNSUPPORTED, LOST = "sending", "rejected", "unsupported", "lost"


UNSUCCESSFUL = frozenset({"failed", "cancelled", "expired", REJECTED, LOST})


VENUES = {"raydium": "Raydium", "meteora": "Meteora"}


@dataclass
class OrderRow:
    """What the demo knows about one order, built only from the events it has seen."""

    number: int
    spec: OrderSpec
    status: str = SUBMITTING
    order_id: str | None = None
    attempt: int = 0
    last_seq: int = 0
    reached: int = -1  # index in STEPS of the furthest step of the current attempt
    venue: str | None = None
    quotes: dict[str, Decimal] = field(default_factory=dict)
    reason: str = ""
    route: str = ""  # the route's hops and pools, when it is more than one pool
    message: str = ""
    tx_hash: str | None = None
    executed_price: Decimal | None = None
    amount_out: Decimal | None = None
    latency_ms: float | None = None
    error: str = ""
    error_code: str = ""
    timed_out: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def finished(self) -> bool:
        """Done as far as the exit status goes: terminal, or skipped as unsupported."""
        return self.terminal or self.status == UNSUPPORTED

    @property
    def in_flight(self) -> bool:
        return not self.timed_out and self.status in (SUBMITTING, *STEPS[:-1])

    @property
    def gap_pct(self) -> Decimal | None:
        return gap_pct(self.quotes, self.venue)


def gap_pct(quotes: Mapping[str, Decimal], chosen: str | None) -> Decimal | None:
    """How much more (or, if negative, less) the chosen venue returns than the best other one."""
    if chosen is None or chosen not in quotes:
        return None
    others = [amount for dex, amount in quotes.items() if dex != chosen]
    if not others or max(others) <= 0:
        return None
    best_other = max(others)
    return (quotes[chosen] - best_other) / best_other * 100


def apply_event(row: OrderRow, event: Mapping[str, Any]) -> bool:
    """Fold one WebSocket event into `row`; False (and no change) for replays or foreign events."""
    status, seq = event.get("status"), to_int(event.get("seq"))
    if not isinstance(status, str) or seq is None or seq <= row.last_seq:
        return False
    if row.order_id is not None and event.get("orderId") not in (None, row.order_id):
        return False
    row.last_seq, row.status = seq, status
    row.attempt = to_int(event.get("attempt")) or row.attempt
    if status in STEPS:
        row.reached = STEPS.index(status)
    match status:
        case "pending":
            row.message = text_of(event.get("waiting") or event.get("message"))
        case "routing":
            apply_routing(row, event)
        case "building":
            row.venue = text_of(event.get("dex")) or row.venue
        case "submitted":
            row.tx_hash = text_of(event.get("txHash")) or None
        case "confirmed":
            apply_confirmed(row, event)
        case _ if status in TERMINAL:
            row.error = text_of(event.get("error")) or text_of(event.get("message"))
            row.error_code = text_of(event.get("code"))
            row.attempt = to_int(event.get("attempts")) or row.attempt
    return True


def apply_routing(row: OrderRow, event: Mapping[str, Any]) -> None:
    quotes = [q for q in event.get("quotes") or [] if isinstance(q, Mapping)]
    row.quotes = {
        text_of(q.get("dex")): amount
        for q in quotes
        if (amount := to_decimal(q.get("amountOut"))) is not None
    }
    row.venue = text_of(event.get("chosen")) or None
    row.reason = text_of(event.get("reason"))
    legs = [leg for leg in event.get("routePlan") or [] if isinstance(leg, Mapping)]
    row.route = route_summary(legs) if len(legs) > 1 else ""
    row.tx_hash = None  # a retry: the previous attempt's transaction is history


def route_summary(legs: list[Mapping[str, Any]]) -> str:
    """`SOL → USDT (Raydium AMM v4 80 %, Raydium CPMM 0.25% 20 %) → USDC (Meteora DLMM bin 10)`:
    each hop's token and the pools it is split over, with their shares."""
    hops: dict[tuple[str, str], list[str]] = {}
    for leg in legs:
        hop = (text_of(leg.get("tokenIn")), text_of(leg.get("tokenOut")))
        share = text_of(leg.get("percent"))
        pool = f"{text_of(leg.get('dex')).capitalize()} {text_of(leg.get('poolKind'))}".strip()
        hops.setdefault(hop, []).append(f"{pool} {share} %" if share not in ("", "100") else pool)
    if not hops:
        return ""
    text = next(iter(hops))[0]
    for (_, token_out), pools in hops.items():
        text += f" → {token_out} ({', '.join(pools)})"
    return text


def apply_confirmed(row: OrderRow, event: Mapping[str, Any]) -> None:
    row.venue = text_of(event.get("dex")) or row.venue
    row.tx_hash = text_of(event.get("txHash")) or row.tx_hash
    row.executed_price = to_decimal(event.get("executedPrice"))
    row.amount_out = to_decimal(event.get("amountOut"))
    latency = to_decimal(event.get("latencyMs"))
    row.latency_ms = float(latency) if latency is not None else None


@dataclass(frozen=True)
class LogLine:
    text: str
    status: str
