#!/usr/bin/env python3
"""Watch the engine route and execute a handful of swaps, live.

Start the server first (`make run`), then:

    python demo.py [--url http://localhost:3000] [--orders 5] [--pairs SOL/USDC:1.5 ...]

The URL defaults to the API `make run` starts: http://localhost:$PORT (3000 when PORT is unset),
so `PORT=3001 make demo` follows `PORT=3001 make run`.

All orders are submitted at once and each is followed over its own WebSocket. On a terminal the
progress is a live table; otherwise (CI, pipes, `--plain`) one plain line is printed per event.
Exit status: 0 when every order reached a terminal status (a `failed` order counts: it is a real
outcome), 1 when one did not (rejected, lost or still running at `--timeout`), 2 when the server
is not reachable or not ready.

The file has two halves: a pure part (order specs, the state model fed by event dicts, and the
renderers that turn that state into rich renderables or plain lines) and the I/O that drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from rich import box
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from solders.keypair import Keypair
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidHandshake

STEPS = ("pending", "routing", "building", "submitted", "confirmed")
TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})
# Client-side states: the server never sends these.
SUBMITTING, REJECTED, UNSUPPORTED, LOST = "sending", "rejected", "unsupported", "lost"
UNSUCCESSFUL = frozenset({"failed", "cancelled", "expired", REJECTED, LOST})
VENUES = {"raydium": "Raydium", "meteora": "Meteora"}

DEFAULT_PORT = 3000
DEFAULT_PAIRS = (
    "SOL/USDC:1.5",
    "USDC/SOL:250",
    "SOL/USDT:3",
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
LOG_LINES = 8
REFRESH_PER_S = 8
PLAIN_WIDTH = 100
HTTP_TIMEOUT_S = 10.0
WS_OPEN_TIMEOUT_S = 10.0
SPINNER = "◐◓◑◒"


# --------------------------------------------------------------------------- order specs


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
    """The price of the venue GET /api/quotes would choose (else the best one quoted)."""
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


# --------------------------------------------------------------------------- state model


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
    row.tx_hash = None  # a retry: the previous attempt's transaction is history


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


@dataclass
class Board:
    """All rows plus the recent-events log; every change returns the line describing it."""

    rows: list[OrderRow]
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_LINES))

    @classmethod
    def from_specs(cls, specs: Sequence[OrderSpec]) -> Board:
        return cls([OrderRow(number, spec) for number, spec in enumerate(specs, start=1)])

    def apply(self, index: int, event: Mapping[str, Any]) -> str | None:
        row = self.rows[index]
        if not apply_event(row, event):
            return None
        return self.record(describe_event(row, event), row.status)

    def accept(self, index: int, order_id: str) -> str:
        row = self.rows[index]
        row.order_id = order_id
        return self.note(index, f"accepted as {short_id(order_id)}: {swap_label(row.spec)}", "")

    def reject(self, index: int, http_status: int, code: str, message: str) -> str:
        row = self.rows[index]
        row.error_code, row.error = code, message
        if row.spec.optional and http_status in (400, 404):
            row.status = UNSUPPORTED
            text = f"the server does not support {row.spec.kind} orders ({http_status} {code})"
            return self.note(index, f"{text}: {message} - skipped", UNSUPPORTED)
        row.status = REJECTED
        return self.note(index, f"rejected: {http_status} {code}: {message}", REJECTED)

    def lose(self, index: int, code: str, message: str) -> str:
        row = self.rows[index]
        row.status, row.error_code, row.error = LOST, code, message
        return self.note(index, f"lost: {message}", LOST)

    def time_out(self, index: int, timeout_s: float) -> str:
        row = self.rows[index]
        row.timed_out = True
        text = f"no terminal status after {timeout_s:g} s (last: {row.status})"
        return self.note(index, text, "")

    def note(self, index: int, text: str, status: str) -> str:
        return self.record(f"#{self.rows[index].number} {text}", status)

    def record(self, line: str, status: str) -> str:
        self.log.append(LogLine(line, status))
        return line


# --------------------------------------------------------------------------- text formatting


def to_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def to_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def text_of(value: object) -> str:
    return value if isinstance(value, str) else ""


def plain(value: Decimal) -> str:
    """A decimal as a plain string without exponent or trailing zeros (`5E+6` → `5000000`)."""
    return f"{value.normalize():f}"


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
    return f"{offers or 'no quotes'} → {venue_name(row.venue)}" + (f" ({gap})" if gap else "")


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


# --------------------------------------------------------------------------- rich rendering


def status_style(row: OrderRow) -> str:
    if row.status == "confirmed":
        return "bold green"
    if row.status in ("failed", REJECTED, LOST):
        return "bold red"
    if row.timed_out or row.status in ("cancelled", "expired"):
        return "yellow"
    return "dim" if row.status == UNSUPPORTED else "cyan"


def step_marks(row: OrderRow, tick: int) -> list[tuple[str, str]]:
    """One (glyph, style) per lifecycle step: done, in progress (spinning), stopped, to come."""
    if row.status == "confirmed":
        return [("●", "green")] * len(STEPS)
    current = row.reached if row.status in STEPS else row.reached + 1
    if row.in_flight:
        head = (SPINNER[tick % len(SPINNER)], "bold cyan")
    else:
        head = ("-" if row.status == UNSUPPORTED else "✖", status_style(row))
    return [
        ("●", "green") if i < current else head if i == current else ("○", "dim")
        for i in range(len(STEPS))
    ]


def stepper(row: OrderRow, tick: int) -> Text:
    text = Text()
    for i, (glyph, style) in enumerate(step_marks(row, tick)):
        text.append("─" if i else "", "dim")
        text.append(glyph, style)
    return text


def route_cell(row: OrderRow) -> Text:
    if not row.quotes:
        return Text.assemble(("-", "dim"), "\n", (row.message or row.reason, "dim italic"))
    text = Text()
    order = [d for d in VENUES if d in row.quotes] + [d for d in row.quotes if d not in VENUES]
    for i, dex in enumerate(order):
        text.append(" │ " if i else "", "dim")
        text.append(fmt_amount(row.quotes[dex]), "bold green" if dex == row.venue else "dim")
    gap = row.gap_pct
    text.append(f"  {fmt_gap(gap)}", "green" if gap is None or gap >= 0 else "yellow")
    return Text.assemble(text, "\n", (row.reason, "dim italic"))


def result_cell(row: OrderRow) -> Text:
    if row.error_code or row.error or row.status in UNSUCCESSFUL:
        head = row.error_code or row.status
        return Text.assemble((head, status_style(row)), "\n", (row.error, "dim"))
    tail = ""
    if row.status == "confirmed":
        tail = f"{fmt_amount(row.executed_price)} · {fmt_latency(row.latency_ms)}"
    return Text.assemble((short_hash(row.tx_hash), "cyan"), "\n", tail)


def row_cells(row: OrderRow, tick: int) -> list[Text]:
    spec = row.spec
    amount = f"{fmt_input(spec.amount_in)} {spec.token_in}"
    kind = "" if spec.kind == "market" else f" · {spec.kind}"
    try_style = "bold yellow" if row.attempt > 1 else ""
    return [
        Text.assemble((f"#{row.number}", "bold"), "\n", (short_id(row.order_id), "dim")),
        Text.assemble(
            (f"{spec.token_in} → {spec.token_out}", "bold"),
            "\n",
            (amount, "dim"),
            (kind, "magenta"),
        ),
        Text.assemble(stepper(row, tick), "\n", (row.status, status_style(row))),
        Text(str(row.attempt) if row.attempt else "·", style=try_style),
        route_cell(row),
        result_cell(row),
    ]


def render_table(rows: Sequence[OrderRow], tick: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, header_style="bold")
    table.add_column("Order", width=8, no_wrap=True)
    table.add_column("Swap", width=14, no_wrap=True, overflow="ellipsis")
    table.add_column("Progress", width=9, no_wrap=True)
    table.add_column("Try", width=3, justify="center")
    table.add_column("Raydium │ Meteora  gap", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("Result", width=19, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*row_cells(row, tick))
    return table


LOG_STYLES = {"confirmed": "green", "failed": "red", REJECTED: "red", LOST: "red", "": "dim"}


def render_log(log: Sequence[LogLine]) -> Panel:
    lines = [
        Text(entry.text, LOG_STYLES.get(entry.status, ""), no_wrap=True, overflow="ellipsis")
        for entry in log
    ]
    lines += [Text("")] * (LOG_LINES - len(lines))  # a fixed height keeps the view from jumping
    return Panel(Group(*lines), title="latest events", title_align="left", border_style="dim")


def render_header(board: Board, elapsed_s: float) -> Text:
    totals = summarize(board.rows)
    in_flight = sum(row.in_flight for row in board.rows)
    return Text.assemble(
        ("◆ Solana DEX execution", "bold magenta"),
        f"  {len(board.rows)} orders  ",
        (f"✔ {totals.confirmed} confirmed  ", "green"),
        (f"✖ {totals.failed} failed  ", "red" if totals.failed else "dim"),
        (f"◐ {in_flight} in flight  ", "cyan"),
        (f"{elapsed_s:.1f} s", "dim"),
    )


def render_live(board: Board, elapsed_s: float, tick: int) -> RenderableType:
    """The whole live view: header, one row per order, and the last few events."""
    return Group(
        render_header(board, elapsed_s), render_table(board.rows, tick), render_log(board.log)
    )


@dataclass(frozen=True)
class Totals:
    confirmed: int
    failed: int
    ended_otherwise: int  # cancelled or expired
    unfinished: int
    median_latency_ms: float | None
    venues: dict[str, int]


def summarize(rows: Sequence[OrderRow]) -> Totals:
    confirmed = [row for row in rows if row.status == "confirmed"]
    latencies = [row.latency_ms for row in confirmed if row.latency_ms is not None]
    venues: dict[str, int] = {}
    for row in confirmed:
        venues[venue_name(row.venue)] = venues.get(venue_name(row.venue), 0) + 1
    return Totals(
        confirmed=len(confirmed),
        failed=sum(row.status == "failed" for row in rows),
        ended_otherwise=sum(row.status in ("cancelled", "expired") for row in rows),
        unfinished=sum(not row.finished for row in rows),
        median_latency_ms=statistics.median(latencies) if latencies else None,
        venues=venues,
    )


def final_status(row: OrderRow) -> Text:
    label, detail = ("timed out", f"in {row.status}") if row.timed_out else (row.status, "")
    return Text.assemble(
        (label, status_style(row)),
        ("\n" if row.error_code or detail else ""),
        (row.error_code or detail, "dim"),
    )


SUMMARY_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("#", "right"),
    ("Swap", "left"),
    ("Status", "left"),
    ("Venue", "left"),
    ("Amount out", "right"),
    ("Price", "right"),
    ("Latency", "right"),
    ("Tx", "left"),
)


def render_summary_table(rows: Sequence[OrderRow]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
        title="Summary",
        title_justify="left",
        title_style="bold",
    )
    for name, justify in SUMMARY_COLUMNS:
        # Only the swap label may wrap: codes, amounts and hashes stay whole.
        table.add_column(name, justify=justify, no_wrap=name != "Swap")
    for row in rows:
        out = f"{fmt_amount(row.amount_out)} {row.spec.token_out}" if row.amount_out else "-"
        table.add_row(
            str(row.number),
            swap_label(row.spec),
            final_status(row),
            venue_name(row.venue),
            out,
            fmt_amount(row.executed_price),
            fmt_latency(row.latency_ms),
            short_hash(row.tx_hash),
        )
    return table


def totals_line(totals: Totals) -> Text:
    known = [name for name in VENUES.values() if name in totals.venues]
    order = known + sorted(set(totals.venues) - set(known))
    parts = [f"{totals.confirmed} confirmed", f"{totals.failed} failed"]
    parts += [f"{totals.ended_otherwise} cancelled/expired"] if totals.ended_otherwise else []
    parts += [f"{totals.unfinished} unfinished"] if totals.unfinished else []
    parts += [f"median {fmt_latency(totals.median_latency_ms)}"]
    parts += [" / ".join(f"{name} {totals.venues[name]}" for name in order)] if order else []
    return Text("Totals: " + " · ".join(parts), "bold")


def unfinished_reason(row: OrderRow, timeout_s: float) -> str:
    if row.timed_out:
        return f"still {row.status} after {timeout_s:g} s"
    return f"{row.status}: {row.error_code}" if row.error_code else row.status


def verdict(rows: Sequence[OrderRow], timeout_s: float) -> Text:
    """The closing sentence, which also explains the exit status."""
    unfinished = [row for row in rows if not row.finished]
    if unfinished:
        why = ", ".join(
            f"#{row.number} ({unfinished_reason(row, timeout_s)})" for row in unfinished
        )
        return Text(
            f"✖ {len(unfinished)} order(s) did not reach a terminal status: {why}", "bold red"
        )
    failed = sum(row.status == "failed" for row in rows)
    text = "✔ Every order reached a terminal status"
    if failed:
        text += f"; {failed} failed, a legitimate outcome (see the error codes above)"
    return Text(text + ".", "bold green")


def render_summary(rows: Sequence[OrderRow], timeout_s: float) -> RenderableType:
    return Group(render_summary_table(rows), totals_line(summarize(rows)), verdict(rows, timeout_s))


def exit_code(rows: Sequence[OrderRow]) -> int:
    return 0 if all(row.finished for row in rows) else 1


def resume_url(ws_url: str, after_seq: int) -> str:
    """`ws_url` asking the server to replay only events after `after_seq`."""
    parts = urlsplit(ws_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "afterSeq"]
    query += [("afterSeq", str(after_seq))] if after_seq > 0 else []
    return urlunsplit(parts._replace(query=urlencode(query)))


def ws_url_for(base_url: str, order_id: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urlencode({"orderId": order_id})
    return urlunsplit((scheme, parts.netloc, "/api/orders/execute", query, ""))


def error_parts(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from the contract's error body, tolerating a body that is not one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping):
        return "HTTP_ERROR", response.reason_phrase or "no error body"
    details = [d.get("message") for d in body.get("details") or [] if isinstance(d, Mapping)]
    message = "; ".join([text_of(body.get("error")), *map(text_of, details)]).strip("; ")
    return text_of(body.get("code")) or "HTTP_ERROR", message


# --------------------------------------------------------------------------- I/O


@dataclass(frozen=True)
class Options:
    url: str
    specs: Sequence[OrderSpec]
    timeout_s: float
    slippage_bps: int
    advanced: bool
    plain: bool


@dataclass
class Session:
    """One run: the board, the console, and whether lines are printed as they happen."""

    board: Board
    console: Console
    plain: bool
    options: Options
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def show(self, line: str | None, at: object = None) -> None:
        if line is not None and self.plain:
            moment = at or datetime.now(UTC).isoformat()
            self.console.out(plain_line(line, moment), highlight=False)

    def event(self, index: int, event: Mapping[str, Any]) -> None:
        self.show(self.board.apply(index, event), event.get("at"))


async def check_health(client: httpx.AsyncClient, url: str) -> str | None:
    """None when the server is up and ready, else a one-line hint for the user."""
    try:
        response = await client.get("/health")
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        return f"No engine answering at {url} ({reason}). Start it with `make run`, then retry."
    if response.status_code == 200:
        return None
    what = ", ".join(f"{name} down" for name in down_dependencies(response))
    return (
        f"The engine at {url} is up but not ready ({what or f'HTTP {response.status_code}'})."
        " Check the `make run` output."
    )


def down_dependencies(response: httpx.Response) -> list[str]:
    """Which of the /health dependencies report `ok: false` (none if the body is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        return []
    if not isinstance(body, Mapping):
        return []
    return [
        name
        for name in ("postgres", "redis")
        if isinstance(part := body.get(name), Mapping) and part.get("ok") is False
    ]


async def run_order(
    session: Session, client: httpx.AsyncClient, index: int, deadline: float
) -> None:
    """Submit one order and follow it to a terminal status or the deadline."""
    board, options = session.board, session.options
    row = board.rows[index]
    try:
        async with asyncio.timeout_at(deadline):
            body = row.spec.body(options.slippage_bps, f"demo-{session.run_id}-{row.number}")
            try:
                response = await client.post("/api/orders/execute", json=body)
            except httpx.HTTPError as exc:
                session.show(board.reject(index, 0, "REQUEST_FAILED", type(exc).__name__))
                return
            if response.status_code != 200:
                session.show(board.reject(index, response.status_code, *error_parts(response)))
                return
            accepted = response.json()
            order_id = text_of(accepted.get("orderId"))
            session.show(board.accept(index, order_id))
            if row.spec.launch_mint:
                await launch_token(session, client, index, row.spec.launch_mint)
            ws_url = text_of(accepted.get("wsUrl")) or ws_url_for(options.url, order_id)
            await follow(session, index, ws_url)
    except TimeoutError:
        session.show(board.time_out(index, options.timeout_s))


async def launch_token(session: Session, client: httpx.AsyncClient, index: int, mint: str) -> None:
    """The sniper is waiting: launch its token in the simulated market so it fires."""
    response = await client.post("/api/sim/launches", json={"mint": mint, "symbol": "MOON"})
    if response.status_code == 201:
        fired = response.json().get("snipersTriggered")
        session.show(
            session.board.note(index, f"MOON launched; {fired} sniper(s) fired", "pending")
        )
    else:
        code, message = error_parts(response)
        session.show(session.board.note(index, f"launch failed: {code} {message}", "failed"))


async def follow(session: Session, index: int, ws_url: str) -> None:
    """Stream the order's events, resuming after the last seen seq if the socket drops."""
    row = session.board.rows[index]
    delay_s = 0.25
    while not row.terminal:
        try:
            async with connect(
                resume_url(ws_url, row.last_seq), open_timeout=WS_OPEN_TIMEOUT_S
            ) as ws:
                async for message in ws:
                    event = json.loads(message)
                    if isinstance(event, Mapping):
                        session.event(index, event)
                    if row.terminal:
                        return
        except ConnectionClosedError as exc:
            if exc.rcvd is not None and exc.rcvd.code == 4404:
                session.show(session.board.lose(index, "WS_4404", "the server does not know it"))
                return
        except (OSError, TimeoutError, InvalidHandshake):
            pass  # the socket could not be (re)opened: retried below until the deadline
        if row.terminal:
            return
        session.show(
            session.board.note(index, f"stream dropped; resuming after seq {row.last_seq}", "")
        )
        await asyncio.sleep(delay_s)
        delay_s = min(2.0, delay_s * 2)


# Each builder prepares one optional order type; a string result says why it was skipped.
AdvancedBuilder = Callable[[httpx.AsyncClient, Options], Awaitable[OrderSpec | str]]


async def limit_spec(client: httpx.AsyncClient, options: Options) -> OrderSpec | str:
    params = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
    response = await client.get("/api/quotes", params=params)
    if response.status_code != 200:
        code, _ = error_parts(response)
        return f"limit order skipped: no quote from the server ({response.status_code} {code})"
    best = best_quote_price(response.json())
    if best is None:
        return "limit order skipped: the quote carried no price"
    extra = {
        "limitPrice": limit_price(best),
        "expiresInSeconds": trigger_expiry_s(options.timeout_s),
    }
    return OrderSpec("limit", "SOL", "USDC", "1", extra=extra, optional=True)


async def sniper_spec(client: httpx.AsyncClient, options: Options) -> OrderSpec | str:
    """A sniper on a token that does not exist yet; its launch follows once it is waiting."""
    mint = str(Keypair().pubkey())
    extra = {"tokenOut": mint, "expiresInSeconds": trigger_expiry_s(options.timeout_s)}
    return OrderSpec("sniper", "SOL", "MOON", "0.5", extra=extra, optional=True, launch_mint=mint)


ADVANCED_BUILDERS: tuple[AdvancedBuilder, ...] = (limit_spec, sniper_spec)


async def advanced_specs(
    client: httpx.AsyncClient, options: Options, say: Callable[[str], None]
) -> list[OrderSpec]:
    specs = []
    for build in ADVANCED_BUILDERS:
        result = await build(client, options)
        if isinstance(result, OrderSpec):
            specs.append(result)
        else:
            say(result)
    return specs


@contextmanager
def live_view(session: Session) -> Iterator[None]:
    """Redraw the board ~8 times a second on a terminal; a no-op in plain mode."""
    if session.plain:
        yield
        return
    started = time.monotonic()

    def frame() -> RenderableType:
        elapsed_s = time.monotonic() - started
        return render_live(session.board, elapsed_s, int(elapsed_s * REFRESH_PER_S))

    with Live(console=session.console, get_renderable=frame, refresh_per_second=REFRESH_PER_S):
        yield


def make_console() -> Console:
    console = Console(highlight=False)
    # Off a terminal rich assumes 80 columns; the summary table reads better at 100.
    return console if console.is_terminal else Console(highlight=False, width=PLAIN_WIDTH)


async def run(options: Options) -> int:
    """The whole demo; returns the process exit status."""
    console = make_console()
    async with httpx.AsyncClient(base_url=options.url, timeout=HTTP_TIMEOUT_S) as client:
        problem = await check_health(client, options.url)
        if problem is not None:
            console.print(problem, style="yellow", markup=False)
            return 2
        specs = list(options.specs)
        if options.advanced:
            specs += await advanced_specs(client, options, lambda text: console.print(text))
        plain_mode = options.plain or not console.is_terminal
        session = Session(Board.from_specs(specs), console, plain_mode, options)
        console.print(f"Submitting {len(specs)} orders to {options.url} at once …", markup=False)
        deadline = asyncio.get_running_loop().time() + options.timeout_s
        with live_view(session):
            await asyncio.gather(
                *(run_order(session, client, i, deadline) for i in range(len(specs)))
            )
    console.print()
    console.print(render_summary(session.board.rows, options.timeout_s))
    return exit_code(session.board.rows)


def pair_argument(text: str) -> list[OrderSpec]:
    try:
        return [parse_pair(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def default_url(env: Mapping[str, str]) -> str:
    """The API `make run` serves with this environment: http://localhost:$PORT."""
    return f"http://localhost:{env.get('PORT') or DEFAULT_PORT}"


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str] = os.environ) -> Options:
    url = default_url(env)
    parser = argparse.ArgumentParser(description="Submit a few swaps and watch them execute.")
    parser.add_argument("--url", default=url, help=f"engine base URL ({url}, from PORT)")
    parser.add_argument("--orders", type=int, default=5, help="market orders to place (5)")
    parser.add_argument(
        "--pairs",
        nargs="+",
        type=pair_argument,
        metavar="IN/OUT[:AMOUNT]",
        help="pairs to cycle through, e.g. SOL/USDC:1.5 USDC/SOL:250",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for every order to finish (60)"
    )
    parser.add_argument("--slippage-bps", type=int, default=50, help="slippage tolerance (50)")
    parser.add_argument(
        "--advanced",
        action="store_true",
        help="also place a limit order and a sniper order on a new launch",
    )
    parser.add_argument(
        "--plain", action="store_true", help="one plain line per event, even on a terminal"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.orders <= 100:
        parser.error("--orders must be between 1 and 100")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    pairs = (
        [spec for group in args.pairs for spec in group]
        if args.pairs
        else [parse_pair(text) for text in DEFAULT_PAIRS]
    )
    return Options(
        url=args.url.rstrip("/"),
        specs=market_specs(pairs, args.orders),
        timeout_s=args.timeout,
        slippage_bps=args.slippage_bps,
        advanced=args.advanced,
        plain=args.plain,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        return asyncio.run(run(options))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
