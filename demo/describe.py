"""Plain-text descriptions of orders and events: amounts, ids, one line per event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from demo.orders import OrderSpec
from demo.state import TERMINAL, VENUES, OrderRow
from demo.values import text_of, to_decimal, to_int


def fmt_amount(value: Decimal | None, significant: int = 6) -> str:
    """About `significant` digits with thousands separators: 148.213, 1,400.12, 0.00742312."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    places = max(0, min(9, significant - 1 - value.adjusted()))
    return f"{value:,.{places}f}"


def fmt_input(amount: str) -> str:
    value = to_decimal(amount)
    return f"{value.normalize():,f}" if value is not None else amount


def fmt_gap(gap: Decimal | None) -> str:
    return "" if gap is None else f"{gap:+.2f} %"


def fmt_latency(latency_ms: float | None) -> str:
    return "-" if latency_ms is None else f"{latency_ms:,.0f} ms"


def short_id(order_id: str | None) -> str:
    return order_id[:8] if order_id else "--------"


def short_hash(tx_hash: str | None) -> str:
    if not tx_hash:
        return "-"
    return tx_hash if len(tx_hash) <= 11 else f"{tx_hash[:4]}…{tx_hash[-4:]}"


def venue_name(dex: str | None) -> str:
    return VENUES.get(dex, dex.title()) if dex else "-"


def swap_label(spec: OrderSpec) -> str:
    kind = "" if spec.kind == "market" else f"{spec.kind} "
    return f"{kind}{fmt_input(spec.amount_in)} {spec.token_in} → {spec.token_out}"


def describe_event(row: OrderRow, event: Mapping[str, Any]) -> str:
    """One line for one event, e.g. `#3 routing: Raydium 148.213 USDC vs ... (+0.89 %)`."""
    status = row.status
    head = f"#{row.number} {status}"
    if row.attempt > 1 and status not in TERMINAL:
        head += f" (attempt {row.attempt})"
    detail = DETAILS.get(status)
    return f"{head}: {detail(row, event)}" if detail else head


def pending_detail(row: OrderRow, event: Mapping[str, Any]) -> str:
    text = f"{row.spec.kind} {fmt_input(row.spec.amount_in)} {row.spec.token_in} → "
    text += f"{row.spec.token_out}, slippage {event.get('slippageBps', '?')} bps"
    if limit := row.spec.extra.get("limitPrice"):
        text += f", limit ≥ {limit} {row.spec.token_out}/{row.spec.token_in}"
    return f"{text} - {row.message}" if row.message else text


def routing_detail(row: OrderRow, event: Mapping[str, Any]) -> str:
    unit = row.spec.token_out
    offers = " vs ".join(f"{venue_name(d)} {fmt_amount(a)} {unit}" for d, a in row.quotes.items())
    gap = fmt_gap(row.gap_pct)
    text = f"{offers or 'no direct pool'} → {venue_name(row.venue)}" + (f" ({gap})" if gap else "")
    return f"{text}; route {row.route}" if row.route else text


def building_detail(row: OrderRow, event: Mapping[str, Any]) -> str:
    minimum = fmt_amount(to_decimal(event.get("minAmountOut")))
    parts = [f"{venue_name(row.venue)} swap, min out {minimum} {row.spec.token_out}"]
    parts += [
        label
        for key, label in (("wrapSol", "wrap SOL"), ("unwrapSol", "unwrap SOL"))
        if event.get(key) is True
    ]
    return ", ".join(parts)


def submitted_detail(row: OrderRow, event: Mapping[str, Any]) -> str:
    slot = to_int(event.get("slot"))
    return f"tx {short_hash(row.tx_hash)}" + (f" in slot {slot:,}" if slot is not None else "")


def confirmed_detail(row: OrderRow, event: Mapping[str, Any]) -> str:
    spec = row.spec
    swap = f"{fmt_input(spec.amount_in)} {spec.token_in} → {fmt_amount(row.amount_out)} "
    return (
        f"{swap}{spec.token_out} @ {fmt_amount(row.executed_price)} via {venue_name(row.venue)}"
        f" in {fmt_latency(row.latency_ms)}, tx {short_hash(row.tx_hash)}"
    )


def ended_detail(row: OrderRow, event: Mapping[str, Any]) -> str:
    text = " - ".join(part for part in (row.error_code, row.error) if part) or "no reason given"
    return text + (f" after {row.attempt} attempts" if row.attempt > 1 else "")


DETAILS: dict[str, Callable[[OrderRow, Mapping[str, Any]], str]] = {
    "pending": pending_detail,
    "routing": routing_detail,
    "building": building_detail,
    "submitted": submitted_detail,
    "confirmed": confirmed_detail,
    "failed": ended_detail,
    "cancelled": ended_detail,
    "expired": ended_detail,
}


def stamp(at: object) -> str:
    """`HH:MM:SS.mmm` of an ISO-8601 timestamp, for the plain output."""
    try:
        moment = datetime.fromisoformat(text_of(at))
    except ValueError:
        return "--:--:--.---"
    return moment.strftime("%H:%M:%S.%f")[:-3]


def plain_line(line: str, at: object) -> str:
    """The non-TTY form of one log line: a timestamp and the line, nothing else."""
    return f"{stamp(at)}  {line}"
