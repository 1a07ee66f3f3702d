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

The package has two halves. Pure: `orders` (what to place), `values`, `state` (one order, fed
by event dicts), `describe` (plain lines), `board` (every order and the log), `render` (rich
renderables). I/O: `client` (health, submit, follow), `scenarios` (the `--advanced` orders) and
`cli` (options and the whole run). `python demo.py` is the entry point.
"""

from demo.board import LOG_LINES, Board
from demo.cli import DEFAULT_PORT, default_url, main, parse_args, run
from demo.client import Options, Session, error_parts, resume_url, ws_url_for
from demo.describe import fmt_amount, plain_line
from demo.orders import (
    DEFAULT_PAIRS,
    OrderSpec,
    best_quote_price,
    limit_price,
    market_specs,
    parse_pair,
    trigger_expiry_s,
)
from demo.render import (
    SPINNER,
    exit_code,
    render_live,
    render_summary,
    step_marks,
    summarize,
    verdict,
)
from demo.state import LOST, REJECTED, SUBMITTING, TERMINAL, UNSUPPORTED, OrderRow, gap_pct
from demo.values import to_decimal

__all__ = [
    "DEFAULT_PAIRS",
    "DEFAULT_PORT",
    "LOG_LINES",
    "LOST",
    "REJECTED",
    "SPINNER",
    "SUBMITTING",
    "TERMINAL",
    "UNSUPPORTED",
    "Board",
    "Options",
    "OrderRow",
    "OrderSpec",
    "Session",
    "best_quote_price",
    "default_url",
    "error_parts",
    "exit_code",
    "fmt_amount",
    "gap_pct",
    "limit_price",
    "main",
    "market_specs",
    "parse_args",
    "parse_pair",
    "plain_line",
    "render_live",
    "render_summary",
    "resume_url",
    "run",
    "step_marks",
    "summarize",
    "to_decimal",
    "trigger_expiry_s",
    "verdict",
    "ws_url_for",
]
