"""Scenario 4, soak: RSS of the API and the worker over a long run at SIM_LATENCY_SCALE=0.

Closed-loop clients submit and follow orders (so the WebSocket and hub paths are exercised
too) while RSS is sampled every second. Growth is measured from the sample taken a quarter of
the way through (after warm-up: pools, caches and allocator arenas have filled) to the end;
flat means within 10 %. The slope over the second half is reported too, and Redis memory
(keys the engine leaves behind).
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench import counters, steps
from bench.clients import say
from bench.stack import EngineProcesses, Servers, rss_mb

FLAT_PCT = 10.0
# RSS climbs for the first ~30 s (pools, caches, allocator arenas); growth is measured from here.
WARM_UP_SHARE = 0.25


@dataclass
class Config:
    duration_s: float = 60.0  # 0 = run exactly `orders` orders
    orders: int = 1_000_000
    clients: int = 64
    client_procs: int = 2
    worker_concurrency: int = 10


async def run(servers: Servers, cfg: Config) -> dict[str, Any]:
    engine = EngineProcesses(
        servers,
        "soak",
        {"SIM_LATENCY_SCALE": "0", "WORKER_CONCURRENCY": str(cfg.worker_concurrency)},
    )
    await engine.prepare()
    series: list[dict[str, Any]] = []
    try:
        await engine.start_api()
        worker = engine.start_worker()
        await engine.wait_worker_ready(worker)
        assert engine.api is not None
        api_pid, worker_pid = engine.api.pid, worker.pid
        t0 = time.monotonic()

        async def sample() -> None:
            while True:
                series.append({
                    "t_s": round(time.monotonic() - t0, 1),
                    "api_mb": round(rss_mb(api_pid), 1),
                    "worker_mb": round(rss_mb(worker_pid), 1),
                    "redis_mb": await counters.redis_memory_mb(servers.redis_url),
                })  # fmt: skip
                await asyncio.sleep(1)

        def tick() -> str:
            last = series[-1] if series else {"api_mb": 0, "worker_mb": 0}
            return f"  rss api {last['api_mb']} MB worker {last['worker_mb']} MB"

        sampler = asyncio.create_task(sample())
        amount = f"{cfg.duration_s:.0f} s" if cfg.duration_s else f"{cfg.orders} orders"
        say(f"» soak: {amount} of orders from {cfg.clients} clients")
        try:
            load = await steps.follow_load(
                engine, "soak", cfg.orders, cfg.clients, cfg.client_procs,
                duration_s=cfg.duration_s, timeout_s=3 * 3600, on_tick=tick,
            )  # fmt: skip
        finally:
            sampler.cancel()
        series.append({
            "t_s": round(time.monotonic() - t0, 1),
            "api_mb": round(rss_mb(api_pid), 1), "worker_mb": round(rss_mb(worker_pid), 1),
            "redis_mb": await counters.redis_memory_mb(servers.redis_url),
        })  # fmt: skip
    finally:
        engine.stop()
    out = {
        "config": vars(cfg), "load": load, "series": series,
        **_growth(series, load["completed"]),
    }  # fmt: skip
    say(
        f"  api {out['api']['from_mb']} → {out['api']['to_mb']} MB ({out['api']['growth_pct']}%),"
        f" worker {out['worker']['from_mb']} → {out['worker']['to_mb']} MB "
        f"({out['worker']['growth_pct']}%), redis +{out['redis_bytes_per_order']} B/order"
    )
    return out


def _slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) in MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    return round(60 * sum((t - mx) * (v - my) for t, v in points) / var, 3)


def _growth(series: list[dict[str, Any]], orders: int) -> dict[str, Any]:
    if len(series) < 2:
        return {"flat": None}
    total_t = series[-1]["t_s"] or 1
    start = next((s for s in series if s["t_s"] >= WARM_UP_SHARE * total_t), series[0])
    end = series[-1]
    second_half = [s for s in series if s["t_s"] >= total_t / 2]
    out: dict[str, Any] = {}
    for proc in ("api", "worker"):
        a, b = start[f"{proc}_mb"], end[f"{proc}_mb"]
        out[proc] = {
            "from_mb": a,
            "to_mb": b,
            "max_mb": max(s[f"{proc}_mb"] for s in series),
            "growth_pct": round(100 * (b - a) / max(a, 1e-9), 1),
            "second_half_mb_per_min": _slope_mb_per_min(
                [(s["t_s"], s[f"{proc}_mb"]) for s in second_half]
            ),
        }
    out["flat"] = all(abs(out[p]["growth_pct"]) <= FLAT_PCT for p in ("api", "worker"))
    redis_growth = (end["redis_mb"] - series[0]["redis_mb"]) * 2**20
    out["redis_bytes_per_order"] = round(redis_growth / max(orders, 1))
    out["measured_from_s"] = start["t_s"]
    return out
