"""Talking to the engine: health, submitting one order, following it over its WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from rich.console import Console, RenderableType
from rich.live import Live
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidHandshake

from demo.board import Board
from demo.describe import plain_line
from demo.orders import OrderSpec
from demo.render import PLAIN_WIDTH, render_live
from demo.values import text_of

HTTP_TIMEOUT_S = 10.0


WS_OPEN_TIMEOUT_S = 10.0


REFRESH_PER_S = 8


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


@dataclass(frozen=True)
class Options:
    url: str
    specs: Sequence[OrderSpec]
    timeout_s: float
    slippage_bps: int
    advanced: bool
    plain: bool
    api_key: str | None = None  # AUTH_MODE=keys: sent on every request and socket

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


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
                resume_url(ws_url, row.last_seq),
                open_timeout=WS_OPEN_TIMEOUT_S,
                additional_headers=session.options.headers(),
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
