"""What the Prometheus metrics cost per order, one recording call at a time.

Each call an order makes is timed in a loop (best of several rounds, so other processes on the
machine inflate it least), with metrics on and off, and added up the way one market order
calls them: the API records one submission, two requests (the POST and the WebSocket session)
and one socket close, and runs the request middleware twice; the worker makes four transitions
(each a `RunObserver.moved`, four stage observations and one finish with its latency) and
starts and ends one job. A scrape's cost is timed too: it is paid per scrape, not per order.

`make bench BENCH_ARGS="--only metrics"`.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.observe import RequestMiddleware
from bench.clients import say
from bench.stack import Servers
from shared.logs import JsonFormatter
from shared.metrics import STAGES, ApiMetrics, WorkerMetrics
from worker.observe import RunObserver


@dataclass
class Config:
    calls: int = 20_000
    rounds: int = 5


def _best_ns(fn: Callable[[], object], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def _api_calls(m: ApiMetrics) -> dict[str, Callable[[], object]]:
    return {
        "orders_submitted_total": lambda: m.submitted("market"),
        "http_request_duration_seconds": lambda: m.request(
            "/api/orders/execute", "POST", 200, 0.002
        ),
        "websocket_* at close": lambda: m.socket_closed(5, False),
    }


def _worker_calls(m: WorkerMetrics) -> dict[str, Callable[[], object]]:
    started = datetime.now(UTC)

    def order_transitions() -> None:
        observer = RunObserver(m, "pending", started, 0, "")
        for _, status in STAGES:
            observer.moved(status, 1, "raydium", "")

    def job() -> None:
        m.job_started()
        m.job_ended()

    return {
        "one order's 4 transitions (stages, latency, finish, log context)": order_transitions,
        "jobs_in_progress (start + end)": job,
    }


async def _middleware_ns(metrics: ApiMetrics | None, calls: int, rounds: int) -> float:
    """The middleware around an app that answers at once, minus that app alone."""

    class State:
        pass

    class App:
        state = State()

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})

    app = App()
    if metrics is not None:
        app.state.metrics = metrics  # type: ignore[attr-defined]
    wrapped = RequestMiddleware(app)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "app": app}

    async def send(_: Any) -> None:
        pass

    async def receive() -> Any:
        return {}

    async def timed(target: Any) -> float:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter_ns()
            for _ in range(calls):
                await target(dict(scope), receive, send)
            best = min(best, (time.perf_counter_ns() - started) / calls)
        return best

    return await timed(wrapped) - await timed(app)


def _scrape_ms(api: ApiMetrics, worker: WorkerMetrics) -> dict[str, float]:
    for code in ("VALIDATION_ERROR", "RATE_LIMITED", "SERVICE_UNAVAILABLE"):
        api.rejected(code)
    for route in ("/api/orders/execute", "/api/orders/{order_id}", "/api/orders", "/health"):
        for status in (200, 400, 404, 503):
            api.request(route, "GET", status, 0.01)
    for dex in ("raydium", "meteora"):
        worker.finished("confirmed", dex, "", 1.0)
        for code in ("SLIPPAGE_EXCEEDED", "BLOCKHASH_EXPIRED", "INSUFFICIENT_LIQUIDITY"):
            worker.finished("failed", dex, code, 1.0)
    for pair in range(11):
        for dex in ("raydium", "meteora"):
            worker.venue_price.labels(f"P{pair}", dex).set(1.0)
    return {
        "api": _best_ns(api.render, 200, 3) / 1e6,
        "worker": _best_ns(worker.render, 200, 3) / 1e6,
    }


def _log_line_ns(calls: int, rounds: int) -> dict[str, float]:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "worker.pipeline", logging.INFO, __file__, 1, "order %s", ("x",), None
    )
    return {"json log line": _best_ns(lambda: formatter.format(record), calls, rounds)}


async def run(servers: Servers, cfg: Config) -> dict[str, Any]:
    del servers  # nothing here needs a server
    out: dict[str, Any] = {}
    for enabled in (True, False):
        api, worker = ApiMetrics(enabled), WorkerMetrics(enabled)
        calls = {**_api_calls(api), **_worker_calls(worker)}
        costs = {name: _best_ns(fn, cfg.calls, cfg.rounds) for name, fn in calls.items()}
        costs["request middleware (per request)"] = await _middleware_ns(api, cfg.calls, cfg.rounds)
        # One market order: 1 submission, 2 requests (POST + WebSocket), 1 socket close,
        # 2 passes through the middleware (which include the two request observations).
        api_per_order = (
            costs["orders_submitted_total"]
            + costs["websocket_* at close"]
            + 2 * costs["request middleware (per request)"]
        )
        worker_per_order = sum(
            costs[name]
            for name in (
                "one order's 4 transitions (stages, latency, finish, log context)",
                "jobs_in_progress (start + end)",
            )
        )
        out["on" if enabled else "off"] = {
            "ns_per_call": {k: round(v) for k, v in costs.items()},
            "api_us_per_order": round(api_per_order / 1000, 2),
            "worker_us_per_order": round(worker_per_order / 1000, 2),
        }
    out["scrape_ms"] = {
        k: round(v, 3) for k, v in _scrape_ms(ApiMetrics(), WorkerMetrics()).items()
    }
    out["log_ns"] = {k: round(v) for k, v in _log_line_ns(cfg.calls, cfg.rounds).items()}
    for mode in ("on", "off"):
        figures = out[mode]
        say(
            f"metrics {mode}: per order API {figures['api_us_per_order']} µs, "
            f"worker {figures['worker_us_per_order']} µs"
        )
        for name, ns in figures["ns_per_call"].items():
            say(f"  {name:<66} {ns:>7} ns")
    say(
        f"a scrape: API {out['scrape_ms']['api']} ms, worker {out['scrape_ms']['worker']} ms "
        "(render only; the worker also reads the queue and the pools)"
    )
    await asyncio.sleep(0)
    return out
