"""Steps the scenarios share: drive a load and account for it, wait for the queue to drain,
check that every order's events are in PostgreSQL."""

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from bench import counters
from bench.clients import LoadGen, Ticker, merge, rate_line, say, split
from bench.stack import HOST, CpuGauge, CpuMeter, EngineProcesses
from bench.stats import summary

TERMINAL = ("confirmed", "failed", "cancelled", "expired")
EXPECTED_EVENTS = 5  # pending, routing, building, submitted, confirmed


def roles(engine: EngineProcesses) -> dict[str, list[int]]:
    """Process ids of each part of the system, for CPU accounting."""
    assert engine.api is not None
    return {
        "api": [engine.api.pid],
        "worker": [w.pid for w in engine.workers],
        "postgres": [engine.servers.pg_pid],
        "valkey": [engine.servers.valkey_pid],
    }


def cpu_report(
    cpu: dict[str, Any], results: list[dict[str, Any]], units: int, unit: str = "order"
) -> dict[str, Any]:
    """CPU seconds per role with the load generators' own, per unit of work, and what else
    ran on the machine meanwhile."""
    cpu_s = dict(cpu["cpu_s"])
    cpu_s["clients"] = round(sum(r.get("cpu_s", 0) for r in results), 3)
    clients_total = sum(r.get("cpu_total_s", 0) for r in results)
    busy_s = cpu["machine_busy_pct"] / 100 * cpu["wall_s"] * cpu["cores"]
    ours = sum(v for k, v in cpu_s.items() if k != "clients") + clients_total
    return {
        "wall_s": round(cpu["wall_s"], 2),
        "machine_busy_pct": cpu["machine_busy_pct"],
        "cpu_s": cpu_s,
        # CPU used by processes that are not part of this benchmark (other work on the machine).
        "other_cpu_s": round(max(busy_s - ours, 0), 2),
        f"cpu_ms_per_{unit}": {
            k: round(1000 * v / max(units, 1), 3) for k, v in cpu_s.items() if k != "bench"
        },
    }


async def follow_load(
    engine: EngineProcesses,
    label: str,
    orders: int,
    clients: int,
    procs: int,
    *,
    rate_per_s: float = 0,
    duration_s: float = 0,
    samples: bool = True,
    timeout_s: float = 600,
    on_tick: Callable[[], str] | None = None,
) -> dict[str, Any]:
    """Submit `orders` (at most, with `duration_s`: as many as fit in it) and follow each to
    its end; latencies, throughput, CPU and server-side counters."""
    configs = [
        {"mode": "follow", "host": HOST, "port": engine.port, "orders": n, "clients": c,
         "rate_per_s": rate_per_s / procs, "duration_s": duration_s, "samples": samples,
         "timeout_s": timeout_s}
        for n, c in zip(split(orders, procs), split(max(clients, procs), procs), strict=True)
    ]  # fmt: skip
    gen = LoadGen(configs)
    before = await counters.snapshot(engine.servers.redis_url, engine.database_url)
    meter = CpuMeter(roles(engine))
    gauge = CpuGauge({"api": engine.api.pid, "worker": engine.workers[0].pid})  # type: ignore[union-attr]
    base = rate_line(gen, None if duration_s else orders)
    try:
        await gen.start()
        extra = on_tick or (lambda: "")
        with Ticker(label, lambda t0: f"{base(t0)}  {gauge.line()}{extra()}"):
            results = await gen.wait()
    finally:
        gen.kill()
    cpu = meter.stop()
    after = await counters.snapshot(engine.servers.redis_url, engine.database_url)
    m = merge(results)
    span_s = max(m["last_done"] - m["first_send"], 1e-9)
    return {
        "orders": m["done"] + sum(m["errors"].values()),
        "clients": clients,
        "completed": m["done"],
        "orders_per_s": round(m["done"] / span_s, 1),
        # Completions per second between the first and the last completion (open loop: the
        # rate the engine kept up with, without the first order's latency).
        "completions_per_s": round(
            (m["done"] - 1) / max(m["last_done"] - m["first_done"], 1e-9), 2
        ),
        "statuses": m["statuses"],
        "errors": m["errors"],
        "submit_ms": summary(m["submit_ms"]),
        "e2e_ms": summary(m["e2e_ms"], (50, 95, 99)),
        "delivery_ms": summary(m["delivery_ms"]),
        "events": m["events"],
        "events_replayed": m["replayed"],
        "seq_gaps": m["gaps"],
        "bad_closes": m["bad_close"],
        "ws_connect_ms": summary(m["connect_ms"]),
        "cpu": cpu_report(cpu, results, m["done"]),
        "per_order": counters.per_order(before, after, m["done"]),
    }


async def post_load(
    engine: EngineProcesses, label: str, orders: int, *, rate_per_s: float = 0, clients: int = 16
) -> dict[str, Any]:
    """Submit `orders` without following them: open loop at `rate_per_s`, else flat out."""
    cfg = {"mode": "post", "host": HOST, "port": engine.port, "orders": orders,
           "clients": clients, "rate_per_s": rate_per_s}  # fmt: skip
    gen = LoadGen([cfg])
    meter = CpuMeter(roles(engine))
    line = rate_line(gen, orders, "POSTs")
    try:
        await gen.start()
        with Ticker(label, line):
            results = await gen.wait()
    finally:
        gen.kill()
    cpu = meter.stop()
    m = merge(results)
    span_s = max(m["last_done"] - m["first_send"], 1e-9)
    return {
        "orders": orders,
        "target_per_s": rate_per_s or None,
        "achieved_per_s": round(m["done"] / span_s, 1),
        "errors": m["errors"],
        "submit_ms": summary(m["submit_ms"]),
        "scheduled_ms": summary(m["sched_ms"]),
        "cpu": cpu_report(cpu, results, m["done"]),
    }


async def count_open(url: str) -> tuple[int, int]:
    """(orders not yet terminal, all orders)."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status <> ALL($1::text[])) AS open, count(*) AS n"
            " FROM orders",
            list(TERMINAL),
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["open"]), int(row["n"])


async def wait_drained(engine: EngineProcesses, label: str, timeout_s: float) -> float:
    """Wait until no order is open; returns the seconds waited (raises on timeout)."""
    started = time.monotonic()
    last_print = started
    while True:
        open_, total = await count_open(engine.database_url)
        if open_ == 0:
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > timeout_s:
            raise TimeoutError(f"{open_} of {total} orders still open after {timeout_s:.0f} s")
        if now - last_print >= 1:
            say(f"  {label:<26} {now - started:5.0f}s  {open_} of {total} orders open")
            last_print = now
        await asyncio.sleep(0.25)


async def durability(url: str) -> dict[str, Any]:
    """Every order's events in PostgreSQL: one per seq, and the full status path when confirmed."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """
            WITH per AS (
                SELECT o.id, o.status, o.last_seq,
                       count(e.seq) AS events, array_agg(e.status ORDER BY e.seq) AS path
                FROM orders o LEFT JOIN order_events e ON e.order_id = o.id
                GROUP BY o.id
            )
            SELECT count(*) AS orders,
                   count(*) FILTER (WHERE status = 'confirmed') AS confirmed,
                   count(*) FILTER (WHERE status <> ALL($1::text[])) AS open,
                   coalesce(sum(events), 0) AS events,
                   count(*) FILTER (WHERE events <> last_seq) AS seq_mismatch,
                   count(*) FILTER (WHERE status = 'confirmed' AND path <> $2::text[])
                       AS wrong_path
            FROM per
            """,
            list(TERMINAL),
            ["pending", "routing", "building", "submitted", "confirmed"],
        )
        retried = await conn.fetchval("SELECT count(*) FROM orders WHERE attempts > 1")
        codes = await conn.fetch(
            "SELECT error_code, count(*) AS n FROM orders WHERE error_code IS NOT NULL"
            " GROUP BY error_code ORDER BY n DESC"
        )
    finally:
        await conn.close()
    out: dict[str, Any] = {k: int(v) for k, v in dict(row or {}).items()}
    out["retried"] = int(retried)
    out["error_codes"] = {r["error_code"]: int(r["n"]) for r in codes}
    return out


async def event_span(url: str, since: Any = None) -> dict[str, Any]:
    """From PostgreSQL's own timestamps: first `routing` to last terminal event, and the
    per-order time from routing to its end."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT min(at) FILTER (WHERE status = 'routing') AS started,
                   max(at) FILTER (WHERE status = ANY($1::text[])) AS ended
            FROM order_events GROUP BY order_id
            """,
            list(TERMINAL),
        )
    finally:
        await conn.close()
    spans = [(r["started"], r["ended"]) for r in rows if r["started"] and r["ended"]]
    if not spans:
        return {"orders": 0}
    first = min(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    span_s = (ends[-1] - first).total_seconds()
    # The middle 80 % of completions leaves out the ramp-up and the tail.
    lo, hi = ends[len(ends) // 10], ends[(len(ends) * 9) // 10 - 1 if len(ends) >= 10 else -1]
    mid_s = (hi - lo).total_seconds()
    return {
        "orders": len(spans),
        "span_s": round(span_s, 2),
        "orders_per_s": round(len(spans) / max(span_s, 1e-9), 1),
        "steady_orders_per_s": round(0.8 * len(spans) / mid_s, 1) if mid_s > 0 else None,
        "order_ms": summary([(e - s).total_seconds() * 1000 for s, e in spans]),
    }


def speed_reference() -> dict[str, float] | None:
    """How fast this host is right now, in the two things the engine spends its time on:
    Python bytecode (the best of 5 timings of a million additions, ms) and a message between
    two processes (one byte to an echoing child and back over a Unix socket, µs per round
    trip, the median of 5 batches). Lower is faster for both. A shared host can be 2-4x
    slower from one minute to the next, or from one day's machine to the next, and every
    figure in the suite moves with it: each scenario records these beside its own figures.
    None if it could not be measured: it is context for the figures, never a reason to lose
    them."""
    try:
        return {"python_loop_ms": _python_loop_ms(), "ipc_round_trip_us": _round_trip_us()}
    except (OSError, subprocess.SubprocessError, ConnectionError) as exc:
        say(f"  (host speed not measured: {type(exc).__name__}: {exc})")
        return None


def _python_loop_ms() -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


_ECHO = (
    "import socket, sys\ns = socket.socket(fileno=int(sys.argv[1]))\nwhile s.recv(1): s.send(b'x')"
)


def _round_trip_us(batches: int = 5, trips: int = 4000) -> float:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)  # a child that died or hangs must not hang the suite
        child = subprocess.Popen(
            [sys.executable, "-c", _ECHO, str(theirs.fileno())], pass_fds=[theirs.fileno()]
        )
        try:
            theirs.close()
            per_trip = []
            for batch in range(batches + 1):  # the first batch waits for the child to start
                started = time.perf_counter()
                for _ in range(trips):
                    ours.sendall(b"x")
                    if not ours.recv(1):
                        raise ConnectionError("the echo process exited")
                if batch:
                    per_trip.append((time.perf_counter() - started) / trips)
        finally:
            child.kill()
            child.wait(10)
    return round(statistics.median(per_trip) * 1e6, 1)


def machine() -> dict[str, Any]:
    import platform

    import psutil  # type: ignore[import-untyped]

    model = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "speed_at_start": speed_reference(),
    }
