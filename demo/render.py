"""Rich renderables of the board: the live table, the log panel and the final summary."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Group, JustifyMethod, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from demo.board import LOG_LINES, Board
from demo.describe import (
    fmt_amount,
    fmt_gap,
    fmt_input,
    fmt_latency,
    short_hash,
    short_id,
    swap_label,
    venue_name,
)
from demo.state import (
    LOST,
    REJECTED,
    STEPS,
    UNSUCCESSFUL,
    UNSUPPORTED,
    VENUES,
    LogLine,
    OrderRow,
)

SPINNER = "◐◓◑◒"


PLAIN_WIDTH = 100


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
        head = row.route or "-"
        return Text.assemble((head, "dim"), "\n", (row.message or row.reason, "dim italic"))
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
