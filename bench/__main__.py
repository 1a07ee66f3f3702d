"""`python -m bench [--full] [--only e2e,realistic,fanout,soak,...] [--profile]`.

Starts PostgreSQL (durable: fsync on) and Valkey (append-only file, fsync every second) in a
temporary folder, runs the scenarios one after another, each with its own API and worker
processes, prints progress and a table, and writes `bench/results/latest.json` and
`latest.md`. `--profile` runs the end-to-end scenario under py-spy and adds where the API and
the worker spend their CPU (`bench/results/profile.md`).
"""

import argparse
import asyncio
import importlib
import signal
import time
from pathlib import Path
from typing import Any

import uvloop

from bench import e2e, fanout, realistic, report, soak, steps
from bench.clients import say
from bench.profile import Profiling
from bench.stack import Servers

QUICK = ("e2e", "realistic", "fanout", "soak", "routing")
# Focused benchmarks of one component, run in full mode or with --only. Each module has
# `Config` and `async run(servers, cfg) -> dict`.
EXTRAS = {
    "routing": "bench.routing",  # smart order routing: gains, splits, hops, time per route
    "triggers": "bench.triggers",  # market loop with 10,000 open limit orders
    "venue_gap": "bench.venue_gap",  # price gap between the venues as the market drifts
    "metrics": "bench.metrics_cost",  # what each Prometheus metric costs per order
    "framework": "bench.framework",  # what FastAPI adds to the POST and the WebSocket, in process
}
SCENARIOS = tuple(dict.fromkeys(QUICK + tuple(EXTRAS)))
RESULTS = Path(__file__).resolve().parent / "results"


def configs(full: bool) -> dict[str, Any]:
    """Quick mode fits in about five minutes; full mode adds the long soak and more runs."""
    if not full:
        return {
            "e2e": e2e.Config(runs=3, duration_s=12, warmup=200, baseline_s=2, post_s=2),
            "realistic": realistic.Config(),
            "fanout": fanout.Config(),
            "soak": soak.Config(duration_s=45),
        }
    return {
        "e2e": e2e.Config(runs=5, duration_s=30, warmup=500, baseline_s=5, post_s=6),
        "realistic": realistic.Config(
            brief_orders=200, processes=(1, 2, 3), max_backlog=4000, full=True
        ),
        "fanout": fanout.Config(levels=(500, 2000, 5000, 8000)),
        "soak": soak.Config(duration_s=0, orders=100_000),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full mode (long soak, more runs)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the API and worker (e2e, fanout)"
    )
    parser.add_argument("--native", action="store_true", help="with --profile: C frames too")
    parser.add_argument("--runs", type=int, help="e2e runs (median reported)")
    parser.add_argument("--orders", type=int, help="orders per e2e run (instead of a duration)")
    parser.add_argument("--duration", type=float, help="seconds per e2e run")
    parser.add_argument("--clients", type=int, help="concurrent e2e clients")
    parser.add_argument("--worker-concurrency", type=int, help="WORKER_CONCURRENCY for e2e")
    parser.add_argument(
        "--tcp", action="store_true", help="reach PostgreSQL and Valkey over TCP loopback"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.profile and not chosen:
        chosen = ["e2e", "fanout"]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.scenarios = chosen or list(SCENARIOS if args.full else QUICK)
    return args


async def main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    cfg = configs(args.full)
    e2e_cfg: e2e.Config = cfg["e2e"]
    for name in ("runs", "orders", "clients", "worker_concurrency"):
        if getattr(args, name) is not None:
            setattr(e2e_cfg, name, getattr(args, name))
    if args.orders is not None:
        e2e_cfg.duration_s = 0
    if args.duration is not None:
        e2e_cfg.duration_s = args.duration
    args.out.mkdir(parents=True, exist_ok=True)
    # A profiled run is slower than a plain one: its figures go beside the raw profiles, not
    # over the suite's latest results.
    results_dir = args.out / "profile" if args.profile else args.out
    results_dir.mkdir(exist_ok=True)
    profiling = None
    if args.profile:
        profiling = Profiling(args.out / "profile", native=args.native)
        profiling.dir.mkdir(exist_ok=True)
        for old in profiling.dir.glob("*.collapsed.txt"):
            old.unlink()
    results: dict[str, Any] = {
        "mode": "full" if args.full else "quick",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": steps.machine(),
        "scenarios": {},
    }
    started = time.monotonic()
    failed: list[str] = []
    # The profile's Redis trace tells the API from the worker by their TCP ports; over Unix
    # sockets MONITOR shows every client as the same socket.
    servers = Servers(tcp=args.tcp or args.profile)
    results["machine"]["transport"] = servers.transport
    try:
        say(
            "» starting PostgreSQL (fsync on) and Valkey (appendfsync everysec) in "
            f"{servers.root}, reached over {servers.transport}"
        )
        servers.start()
        if profiling is not None:
            await servers.enable_stat_statements()
        for name in args.scenarios:
            say(f"\n=== {name} ===")
            t0 = time.monotonic()
            speed = steps.speed_reference()
            try:
                if name == "e2e":
                    out = await e2e.run(servers, e2e_cfg, profiling)
                elif name == "realistic":
                    out = await realistic.run(servers, cfg["realistic"])
                elif name == "fanout":
                    out = await fanout.run(servers, cfg["fanout"], profiling)
                elif name == "soak":
                    out = await soak.run(servers, cfg["soak"])
                else:
                    module = importlib.import_module(EXTRAS[name])
                    out = await module.run(servers, module.Config())
            except Exception as exc:  # one broken scenario must not cost the others' figures
                say(f"!! {name} failed: {type(exc).__name__}: {exc}")
                out = {"error": f"{type(exc).__name__}: {exc}"}
                failed.append(name)
            out["seconds"] = round(time.monotonic() - t0, 1)
            out["speed"] = speed
            results["scenarios"][name] = out
            report.write(results, results_dir)  # partial results survive a later failure
    finally:
        servers.stop()
    results["seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["speed_at_end"] = steps.speed_reference()
    report.write(results, results_dir)
    report.show(results)
    if profiling is not None:
        report.write_profile(results, args.out)
    say(f"\nresults: {results_dir / 'latest.md'} and latest.json ({results['seconds']:.0f} s)")
    if profiling is not None:
        say(f"profile: {args.out / 'profile.md'} (raw stacks in {profiling.dir})")
    if failed:
        say(f"failed: {', '.join(failed)} (see above and latest.json)")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        raise SystemExit(uvloop.run(main(parse_args())))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("\ninterrupted: servers and engine processes stopped; partial results were kept")
        raise SystemExit(130) from None
