"""The demo's pure half: event dicts in, row state, log lines and rendered text out."""

from decimal import Decimal
from typing import Any

import pytest
from rich.console import Console

import demo

ORDER_ID = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
TX_HASH = "5VfYmGBjvQKe3H7nX2pLwq9rTz4sUdCkA8bN1mJhRyE6oPiW"


def event(seq: int, status: str, attempt: int = 1, **details: Any) -> dict[str, Any]:
    return {
        "orderId": ORDER_ID,
        "seq": seq,
        "status": status,
        "at": f"2025-01-01T12:00:0{seq}.250000Z",
        "attempt": attempt,
        **details,
    }


def routing(seq: int, attempt: int, raydium: str, meteora: str, chosen: str) -> dict[str, Any]:
    quotes = [
        {"dex": "raydium", "pool": "58oQ", "poolKind": "AMM v4", "amountOut": raydium},
        {"dex": "meteora", "pool": "BGm1", "poolKind": "DLMM bin 10", "amountOut": meteora},
    ]
    reason = f"{chosen} returns more after fees and price impact"
    return event(seq, "routing", attempt, quotes=quotes, chosen=chosen, reason=reason)


PENDING = event(
    1, "pending", type="market", tokenIn="SOL", tokenOut="USDC", amountIn="1.5", slippageBps=50
)
HAPPY = [
    PENDING,
    routing(2, 1, "148.21", "146.90", "raydium"),
    event(
        3,
        "building",
        dex="raydium",
        pool="58oQ",
        minAmountOut="147.469",
        wrapSol=True,
        unwrapSol=False,
        computeUnitPrice=25000,
        computeUnitLimit=200000,
        lastValidBlockHeight=1000,
    ),
    event(4, "submitted", txHash=TX_HASH, slot=312456789),
    event(
        5,
        "confirmed",
        dex="raydium",
        txHash=TX_HASH,
        executedPrice="98.79",
        amountOut="148.185",
        feeAmount="0.00375",
        slot=312456791,
        latencyMs=2315,
    ),
]
RETRIED_THEN_FAILED = [
    PENDING,
    routing(2, 1, "148.21", "146.90", "raydium"),
    event(3, "building", dex="raydium", minAmountOut="147.469"),
    event(4, "submitted", txHash=TX_HASH, slot=312456789),
    routing(5, 2, "145.00", "146.50", "meteora"),
    event(
        6,
        "failed",
        attempt=2,
        error="ExceededAmountSlippageTolerance: price moved",
        code="SLIPPAGE_EXCEEDED",
        attempts=3,
        retryable=True,
    ),
]


def board_after(events: list[dict[str, Any]], spec: str = "SOL/USDC:1.5") -> demo.Board:
    board = demo.Board.from_specs([demo.parse_pair(spec)])
    board.accept(0, ORDER_ID)
    for item in events:
        board.apply(0, item)
    return board


def rendered(renderable: Any, width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_confirmed_order_row_holds_venue_quotes_gap_and_result() -> None:
    row = board_after(HAPPY).rows[0]

    assert row.status == "confirmed" and row.terminal and row.finished
    assert row.venue == "raydium"
    assert row.quotes == {"raydium": Decimal("148.21"), "meteora": Decimal("146.90")}
    assert row.gap_pct is not None and round(row.gap_pct, 2) == Decimal("0.89")
    assert (row.tx_hash, row.executed_price, row.latency_ms) == (TX_HASH, Decimal("98.79"), 2315)
    assert row.amount_out == Decimal("148.185")


def test_routing_line_names_both_venues_winner_and_gap() -> None:
    board = board_after(HAPPY[:2])

    assert board.log[-1].text == (
        "#1 routing: Raydium 148.210 USDC vs Meteora 146.900 USDC → Raydium (+0.89 %)"
    )


def test_a_split_or_multi_hop_route_is_shown_hop_by_hop() -> None:
    legs = [
        {"dex": "raydium", "poolKind": "AMM v4", "tokenIn": "SOL", "tokenOut": "USDT"}
        | {"percent": "80"},
        {"dex": "raydium", "poolKind": "CPMM 0.25%", "tokenIn": "SOL", "tokenOut": "USDT"}
        | {"percent": "20"},
        {"dex": "meteora", "poolKind": "DLMM bin 10", "tokenIn": "USDT", "tokenOut": "USDC"}
        | {"percent": "100"},
    ]
    routed = routing(2, 1, "148.21", "146.90", "raydium") | {"routePlan": legs}
    board = board_after([PENDING, routed])

    route = "SOL → USDT (Raydium AMM v4 80 %, Raydium CPMM 0.25% 20 %) → USDC (Meteora DLMM bin 10)"
    assert board.rows[0].route == route
    assert board.log[-1].text.endswith(f"→ Raydium (+0.89 %); route {route}")
    single = routing(2, 1, "148.21", "146.90", "raydium") | {"routePlan": legs[:1]}
    assert board_after([PENDING, single]).rows[0].route == ""  # one pool: the quotes say it


def test_limit_price_follows_the_route_when_the_engine_routes() -> None:
    payload = {"routePlan": [{}], "amountIn": "2", "amountOut": "301", "quotes": []}
    assert demo.best_quote_price(payload) == Decimal("150.5")


def test_retry_resets_progress_and_failure_keeps_error_code() -> None:
    row = board_after(RETRIED_THEN_FAILED).rows[0]

    assert row.status == "failed" and row.finished
    assert row.error_code == "SLIPPAGE_EXCEEDED"
    assert row.attempt == 3  # the failed event's `attempts`, not the event's `attempt`
    assert row.venue == "meteora"
    assert row.tx_hash is None  # the first attempt's transaction belongs to that attempt
    assert round(row.gap_pct or 0, 2) == Decimal("1.03")
    assert [glyph for glyph, _ in demo.step_marks(row, tick=0)] == ["●", "●", "✖", "○", "○"]


def test_failed_row_shows_error_code_in_live_view_and_summary() -> None:
    board = board_after(RETRIED_THEN_FAILED)

    live = rendered(demo.render_live(board, elapsed_s=3.0, tick=0))
    summary = rendered(demo.render_summary(board.rows, timeout_s=60))

    assert "SLIPPAGE_EXCEEDED" in live and "3f2a9c1e" in live
    assert "SLIPPAGE_EXCEEDED" in summary
    assert "1 failed, a legitimate outcome" in summary
    assert board.log[-1].text.startswith("#1 failed: SLIPPAGE_EXCEEDED - ExceededAmount")


def test_live_view_fits_gap_and_tx_into_100_columns() -> None:
    live = rendered(demo.render_live(board_after(HAPPY), elapsed_s=2.5, tick=3))

    assert "+0.89 %" in live
    assert "5VfY…oPiW" in live
    assert "2,315 ms" in live


def test_in_flight_row_spins_on_its_current_step() -> None:
    row = board_after(HAPPY[:3]).rows[0]

    marks = demo.step_marks(row, tick=1)
    assert [glyph for glyph, _ in marks] == ["●", "●", demo.SPINNER[1], "○", "○"]
    assert row.in_flight and not row.finished


def test_replayed_and_foreign_events_change_nothing() -> None:
    board = board_after(HAPPY[:3])
    lines_before = list(board.log)

    assert board.apply(0, HAPPY[1]) is None  # seq 2 again, as after a reconnect
    assert board.apply(0, {**HAPPY[3], "orderId": "someone-else"}) is None
    assert board.rows[0].status == "building"
    assert list(board.log) == lines_before


def test_plain_renderer_prints_one_line_per_event() -> None:
    board = demo.Board.from_specs([demo.parse_pair("SOL/USDC:1.5")])
    lines = [
        demo.plain_line(line, item["at"])
        for item in HAPPY
        if (line := board.apply(0, item)) is not None
    ]

    assert len(lines) == len(HAPPY)
    assert all("\n" not in line for line in lines)
    assert [line.split()[2].rstrip(":") for line in lines] == [e["status"] for e in HAPPY]
    assert lines[0] == "12:00:01.250  #1 pending: market 1.5 SOL → USDC, slippage 50 bps"
    assert lines[-1] == (
        "12:00:05.250  #1 confirmed: 1.5 SOL → 148.185 USDC @ 98.7900 via Raydium"
        " in 2,315 ms, tx 5VfY…oPiW"
    )


def test_log_keeps_only_the_latest_events() -> None:
    board = board_after(HAPPY + [event(seq, "confirmed") for seq in range(6, 16)])

    assert len(board.log) == demo.LOG_LINES
    assert board.log[-1].text.startswith("#1 confirmed")


def test_gap_is_negative_when_the_chosen_venue_returns_less() -> None:
    quotes = {"raydium": Decimal("99"), "meteora": Decimal("100")}

    assert demo.gap_pct(quotes, "raydium") == Decimal("-1")
    assert demo.gap_pct({"raydium": Decimal("99")}, "raydium") is None
    assert demo.gap_pct(quotes, None) is None


def test_unsupported_optional_order_is_skipped_but_rejected_market_order_is_not() -> None:
    limit = demo.OrderSpec("limit", "SOL", "USDC", "1", optional=True)
    board = demo.Board.from_specs([limit, demo.parse_pair("SOL/USDC:1")])

    skipped = board.reject(0, 400, "VALIDATION_ERROR", "unknown type")
    board.reject(1, 400, "VALIDATION_ERROR", "unknown token")

    assert board.rows[0].status == demo.UNSUPPORTED and board.rows[0].finished
    assert "does not support limit orders" in skipped
    assert board.rows[1].status == demo.REJECTED and not board.rows[1].finished
    assert demo.exit_code(board.rows) == 1


def test_exit_code_and_totals_accept_failed_but_not_timed_out() -> None:
    done, failed = board_after(HAPPY).rows[0], board_after(RETRIED_THEN_FAILED).rows[0]
    stuck = board_after(HAPPY[:3]).rows[0]
    stuck.timed_out = True

    totals = demo.summarize([done, failed])
    assert (totals.confirmed, totals.failed, totals.unfinished) == (1, 1, 0)
    assert totals.median_latency_ms == 2315 and totals.venues == {"Raydium": 1}
    assert demo.exit_code([done, failed]) == 0
    assert demo.exit_code([done, stuck]) == 1
    assert "still building after 60 s" in demo.verdict([done, stuck], 60).plain


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("148.2134", "148.213"),
        ("1400.1234", "1,400.12"),
        ("0.00742312", "0.00742312"),
        ("5000000", "5,000,000"),
        (None, "-"),
    ],
)
def test_amounts_keep_six_significant_digits(value: str | None, text: str) -> None:
    assert demo.fmt_amount(demo.to_decimal(value)) == text


def test_pairs_cycle_with_new_sizes_and_bodies_carry_decimal_strings() -> None:
    pairs = [demo.parse_pair("sol/usdc:1.5"), demo.parse_pair("BONK/SOL:5e6")]
    specs = demo.market_specs(pairs, 4)

    assert [(s.token_in, s.amount_in) for s in specs] == [
        ("SOL", "1.5"),
        ("BONK", "5000000"),
        ("SOL", "0.75"),
        ("BONK", "2500000"),
    ]
    body = specs[0].body(50, "demo-1")
    assert body["amountIn"] == "1.5" and body["type"] == "market" and body["tokenOut"] == "USDC"
    with pytest.raises(ValueError, match="IN/OUT"):
        demo.parse_pair("SOLUSDC")


def test_resume_url_asks_for_events_after_the_last_seen_seq() -> None:
    url = "ws://localhost:3000/api/orders/execute?orderId=abc"

    assert demo.resume_url(url, 0) == url
    assert demo.resume_url(url, 4) == url + "&afterSeq=4"
    assert demo.resume_url(url + "&afterSeq=2", 7) == url + "&afterSeq=7"
    assert demo.ws_url_for("https://h:1", "abc") == "wss://h:1/api/orders/execute?orderId=abc"


def test_limit_price_sits_just_above_the_chosen_venue() -> None:
    payload = {
        "chosen": "meteora",
        "quotes": [{"dex": "raydium", "price": "150"}, {"dex": "meteora", "price": "149.5"}],
    }

    best = demo.best_quote_price(payload)
    assert best == Decimal("149.5")
    assert demo.limit_price(best) == "149.57475"  # 0.05 % above
