"""Scenario 2, realistic delays (SIM_LATENCY_SCALE=1): quotes ~200 ms, confirmation 1-3 s.

- The brief's load: 100 orders a minute, open loop, WORKER_CONCURRENCY=10, with the simulated
  cluster's default failure rates (drops, expired blockhashes, RPC timeouts), each order
  followed over its WebSocket.
- Capacity: a backlog queued while no worker runs, then drained by the worker(s); throughput
  from PostgreSQL's own event timestamps (first `routing` to last terminal event), for
  WORKER_CONCURRENCY 10, 100, 1000 with one worker and for several worker processes.
"""

from dataclasses import dataclass
from typing import Any

from bench import steps
from bench.clients import say
from bench.stack import EngineProcesses, Servers

DEFAULT_FAILURE_RATES = {"SIM_DROP_RATE": "0.02", "SIM_EXPIRY_RATE": "0.02",
                         "SIM_RPC_TIMEOUT_RATE": "0.02"}  # fmt: skip
# An order takes ~3 s at scale 1, so this many per job slot keeps every slot busy ~12 s.
ORDERS_PER_SLOT = 4


@dataclass
class Config:
    brief_orders: int = 40  # at 100/min: 24 s
    brief_rate_per_min: int = 100
    brief_concurrency: int = 10
    concurrencies: tuple[int, ...] = (10, 100, 1000)
    processes: tuple[int, ...] = (1, 2)
    processes_concurrency: int = 100
    max_backlog: int = 1500
    full: bool = False


async def run(servers: Servers, cfg: Config) -> dict[str, Any]:
    brief = await _brief(servers, cfg)
    shapes = [(conc, 1) for conc in cfg.concurrencies]
    shapes += [(cfg.processes_concurrency, p) for p in cfg.processes if p > 1]
    if cfg.full:
        shapes.append((1000, 2))
    capacity = []
    for conc, procs in shapes:
        try:
            capacity.append(await _drain(servers, cfg, conc, procs))
        except (RuntimeError, TimeoutError) as exc:  # keep the other shapes' figures
            say(f"!! drain c={conc} x {procs}: {exc}")
            capacity.append({"worker_concurrency": conc, "processes": procs, "error": str(exc)})
    return {"config": vars(cfg), "brief": brief, "capacity": capacity}


async def _brief(servers: Servers, cfg: Config) -> dict[str, Any]:
    knobs = {"SIM_LATENCY_SCALE": "1", "WORKER_CONCURRENCY": str(cfg.brief_concurrency)}
    engine = EngineProcesses(servers, "brief", knobs | DEFAULT_FAILURE_RATES)
    await engine.prepare()
    try:
        await engine.start_api()
        await engine.wait_worker_ready(engine.start_worker())
        rate_s = cfg.brief_rate_per_min / 60
        say(
            f"» realistic: {cfg.brief_orders} orders at {cfg.brief_rate_per_min}/min, "
            f"concurrency {cfg.brief_concurrency}, default failure rates"
        )
        out = await steps.follow_load(
            engine, "100/min", cfg.brief_orders, 0, 1, rate_per_s=rate_s, timeout_s=300
        )
        out["durability"] = await steps.durability(engine.database_url)
    finally:
        engine.stop()
    out["orders_per_min"] = round(out["completions_per_s"] * 60, 1)
    out["offered_per_min"] = cfg.brief_rate_per_min
    say(
        f"  {out['completed']}/{cfg.brief_orders} done ({out['statuses']}), "
        f"{out['orders_per_min']}/min; submit→end p50 {out['e2e_ms']['p50']} ms, "
        f"p99 {out['e2e_ms']['p99']} ms"
    )
    return out


async def _drain(servers: Servers, cfg: Config, concurrency: int, procs: int) -> dict[str, Any]:
    backlog = min(max(concurrency * procs * ORDERS_PER_SLOT, 40), cfg.max_backlog)
    name = f"drain_c{concurrency}_p{procs}"
    engine = EngineProcesses(
        servers, name, {"SIM_LATENCY_SCALE": "1", "WORKER_CONCURRENCY": str(concurrency)}
    )
    await engine.prepare()
    label = f"c={concurrency} x {procs} proc"
    try:
        await engine.start_api()
        say(f"» realistic: queue {backlog} orders, then drain with {label}")
        await steps.post_load(engine, f"queue {label}", backlog, clients=16)
        for _ in range(procs):
            engine.start_worker()
        waited_s = await steps.wait_drained(engine, f"drain {label}", 300)
        span = await steps.event_span(engine.database_url)
        durable = await steps.durability(engine.database_url)
    finally:
        engine.stop()
    say(
        f"  {span['orders_per_s']} orders/s overall, {span['steady_orders_per_s']} steady; "
        f"order p50 {span['order_ms']['p50']} ms"
    )
    return {
        "worker_concurrency": concurrency,
        "processes": procs,
        "backlog": backlog,
        "waited_s": round(waited_s, 1),
        **span,
        "confirmed": durable["confirmed"],
        "retried": durable["retried"],
        "error_codes": durable["error_codes"],
    }
