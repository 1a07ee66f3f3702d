"""Scenario 3, WebSocket fan-out: many subscribers on one API process.

For each level: K orders are queued while no worker runs, S subscribers connect spread evenly
over them (S/K per order) and are confirmed held by the API's /health, the API idles a few
seconds with all of them open, then a worker (realistic delays, concurrency K) executes the K
orders and every subscriber times every event to the close. Each order produces 4 live
events, so a level delivers 4·S messages. The K orders start together, so each status
arrives as a burst of K events, S messages: a worst case, where p99 is about the time the API
needs to push a burst, hence the API's CPU per pushed message is reported too.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import steps
from bench.clients import LoadGen, Ticker, merge, say, split
from bench.profile import Profiling, Recorder, analyse
from bench.stack import HOST, CpuMeter, EngineProcesses, Servers, rss_mb
from bench.stats import summary

CONNECT_PROCS = 2
TARGET_SUBSCRIBERS = 5000


@dataclass
class Config:
    levels: tuple[int, ...] = (500, 2000, 5000)
    orders: int = 100
    idle_s: float = 6.0  # longer than the hub's 5 s check (WS_CHECK_S), so its cost shows
    connect_concurrency: int = 100
    target_runs: int = 3  # levels at the target (≥ 5,000) run this often; the median p99 counts
    # The target level again with the worker at the engine's default concurrency (0 = skip).
    paced_concurrency: int = 10


async def run(servers: Servers, cfg: Config, profiling: Profiling | None = None) -> dict[str, Any]:
    engine = EngineProcesses(
        servers,
        "fanout",
        {"SIM_LATENCY_SCALE": "1", "WORKER_CONCURRENCY": str(cfg.orders)},
    )
    await engine.prepare()
    levels = []
    recorder = None
    try:
        await engine.start_api()
        assert engine.api is not None
        for subscribers in cfg.levels:
            if profiling is not None and subscribers == max(cfg.levels):
                recorder = profiling.recorder("api-fanout", engine.api.pid)
            runs = cfg.target_runs if subscribers >= TARGET_SUBSCRIBERS and not recorder else 1
            levels.append(_median_run([
                await _level(engine, cfg, subscribers, recorder) for _ in range(runs)
            ]))  # fmt: skip
        if cfg.paced_concurrency:
            levels.append(
                await _level(engine, cfg, TARGET_SUBSCRIBERS, None, cfg.paced_concurrency)
            )
    finally:
        engine.stop()
    profile = None
    if recorder is not None:
        phases = ("connect", "idle", "deliver")
        profile = {
            f"api-fanout-{phase}": analyse([path])
            | {"raw": [str(path)], "problems": recorder.problems()}
            for phase, path in zip(phases, recorder.paths, strict=False)
        }
    return {"config": vars(cfg), "levels": levels, "profile": profile}


async def _level(
    engine: EngineProcesses,
    cfg: Config,
    subscribers: int,
    recorder: Recorder | None,
    concurrency: int | None = None,
) -> dict[str, Any]:
    """One level, the worker at `concurrency` (default: every order at once); `recorder` (if
    any) profiles the API while connecting, idle, delivering."""
    assert engine.api is not None
    concurrency = concurrency or cfg.orders
    say(
        f"» fan-out: {subscribers} subscribers on {cfg.orders} orders, "
        f"worker concurrency {concurrency}"
    )
    accepted = await _queue_orders(engine, cfg.orders)
    configs = [
        {"mode": "fanout", "host": HOST, "port": engine.port, "order_ids": accepted,
         "subscribers": n, "connect_concurrency": cfg.connect_concurrency, "timeout_s": 300}
        for n in split(subscribers, CONNECT_PROCS)
    ]  # fmt: skip
    gen = LoadGen(configs)
    api = psutil.Process(engine.api.pid)
    t0 = time.monotonic()
    try:
        if recorder:
            recorder.start()
        await gen.start()
        with Ticker("connecting", lambda _: f"{sum(c or 0 for c in gen.connected)} announced"):
            readers = asyncio.ensure_future(gen.wait())
            await asyncio.wait(
                [asyncio.ensure_future(gen.all_connected.wait()), readers],
                return_when=asyncio.FIRST_COMPLETED,
            )
            if readers.done():  # every generator ended before all sockets were open
                readers.result()
                raise RuntimeError("the fan-out clients exited while connecting")
        connect_s = time.monotonic() - t0
        held = await _held(engine, subscribers)
        if recorder:
            recorder.stop()
            recorder.start()
        idle = CpuMeter({"api": [api.pid]})
        await asyncio.sleep(cfg.idle_s)
        idle_cpu = idle.stop()
        if recorder:
            recorder.stop()
            recorder.start()
        rss_held = rss_mb(api.pid)
        say(f"  {held} held after {connect_s:.1f} s; API idle CPU {_pct(idle_cpu)}%")
        engine.start_worker(worker_concurrency=concurrency)
        live = CpuMeter(steps.roles(engine))
        with Ticker("delivering", lambda _: f"{sum(gen.events)} events, {gen.done} closed"):
            results = await readers
        live_cpu = live.stop()
        if recorder:
            recorder.stop()
        # The load generators' CPU from the moment all sockets were open.
        for r, at_connected in zip(results, gen.cpu_at_connected, strict=True):
            r["cpu_s"] = r["cpu_total_s"] = r["cpu_total_s"] - at_connected
    finally:
        gen.kill()
        engine.stop_workers()
        if recorder:
            recorder.stop()
    m = merge(results)
    expected = subscribers * steps.EXPECTED_EVENTS
    out = {
        "subscribers": subscribers,
        "orders": cfg.orders,
        "worker_concurrency": concurrency,
        "held": held,
        "connect_s": round(connect_s, 2),
        "connects_per_s": round(subscribers / connect_s, 1),
        "ws_connect_ms": summary(m["connect_ms"]),
        "api_idle_cpu_pct": _pct(idle_cpu),
        "api_rss_mb_held": round(rss_held, 1),
        "delivery_ms": summary(m["delivery_ms"]),
        "events": m["events"],
        "events_expected": expected,
        "events_replayed": m["replayed"],
        "seq_gaps": m["gaps"],
        "bad_closes": m["bad_close"],
        "closed": m["done"],
        "errors": m["errors"],
        "delivering": steps.cpu_report(live_cpu, results, m["events"], "event"),
        # What one pushed message costs the API, and the rate it pushed them at.
        "api_us_per_message": round(
            1e6 * live_cpu["cpu_s"]["api"] / max(len(m["delivery_ms"]), 1), 1
        ),
        "messages_per_s": round(len(m["delivery_ms"]) / max(live_cpu["wall_s"], 1e-9)),
    }
    say(
        f"  delivery p50 {out['delivery_ms']['p50']} ms p99 {out['delivery_ms']['p99']} ms "
        f"max {out['delivery_ms']['max']} ms; {m['events']}/{expected} events, "
        f"{m['gaps']} gaps, {m['bad_close']} abnormal closes"
    )
    return out


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median delivery p99, noting every run's p99."""
    ranked = sorted(runs, key=lambda r: float(r["delivery_ms"]["p99"] or 0))
    return ranked[len(ranked) // 2] | {"p99_runs": [r["delivery_ms"]["p99"] for r in runs]}


async def _held(engine: EngineProcesses, subscribers: int, timeout_s: float = 30) -> int:
    """Subscriptions the API holds, once it holds them all (or the most seen in `timeout_s`)."""
    best = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        best = max(best, int((await engine.health()).get("subscribers", 0)))
        if best >= subscribers:
            break
        await asyncio.sleep(0.2)
    return best


def _pct(cpu: dict[str, Any]) -> float:
    return round(100 * float(cpu["cpu_s"]["api"]) / max(float(cpu["wall_s"]), 1e-9), 1)


async def _queue_orders(engine: EngineProcesses, n: int) -> list[str]:
    """Submit n orders (no worker runs, so they wait in the queue) and return their ids."""
    from bench.http import Connection

    conn = Connection(HOST, engine.port)
    ids = []
    try:
        for _ in range(n):
            status, body = await conn.request("POST", "/api/orders/execute", _ORDER)
            if status != 200:
                raise RuntimeError(f"POST failed: {status} {body}")
            ids.append(body["orderId"])
    finally:
        conn.close()
    return ids


_ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.01"}
