"""The command line: options, the whole run, the exit status."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Mapping, Sequence

import httpx

from demo.board import Board
from demo.client import (
    HTTP_TIMEOUT_S,
    Options,
    Session,
    check_health,
    live_view,
    make_console,
    run_order,
)
from demo.orders import DEFAULT_PAIRS, OrderSpec, market_specs, parse_pair
from demo.render import exit_code, render_summary
from demo.scenarios import advanced_specs

DEFAULT_PORT = 3000
KEY_HINT = (
    "The engine runs with AUTH_MODE=keys: give the demo a key, `API_KEY=oee_... make demo`. "
    "`python -m app keys create --account demo --scope trade` makes one; --advanced also "
    "launches a token, which needs the admin scope."
)
SCOPE_HINT = (
    "The engine refused this key: placing orders needs the trade scope (--advanced: admin). "
    "`python -m app keys create --account demo --scope trade` makes one."
)
KEY_CHARS = re.compile(r"[\x21-\x7e]+")  # what an HTTP header value can carry as a token


async def run(options: Options) -> int:
    """The whole demo; returns the process exit status."""
    console = make_console()
    async with httpx.AsyncClient(
        base_url=options.url, timeout=HTTP_TIMEOUT_S, headers=options.headers()
    ) as client:
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
    refused = {row.error_code for row in session.board.rows} & {"UNAUTHORIZED", "FORBIDDEN"}
    if refused:
        hint = SCOPE_HINT if options.api_key else KEY_HINT
        console.print(hint, style="yellow", markup=False)
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
    parser.add_argument(
        "--api-key",
        default=env.get("API_KEY") or None,
        help="API key for an engine in AUTH_MODE=keys (default: $API_KEY)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.orders <= 100:
        parser.error("--orders must be between 1 and 100")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.api_key is not None and not KEY_CHARS.fullmatch(args.api_key):
        parser.error("--api-key / API_KEY: a key is printable ASCII without spaces (oee_...)")
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
        api_key=args.api_key,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        return asyncio.run(run(options))
    except KeyboardInterrupt:
        return 130
