"""`python -m devstack run`: the whole engine on one machine (what `make run` calls).

Starts embedded PostgreSQL and Valkey under `.data/` unless DATABASE_URL / REDIS_URL are set,
then the API and one worker as separate processes, waits until the API is healthy, prints
where everything is, and stops it all cleanly on Ctrl-C.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from devstack.servers import EmbeddedPostgres, EmbeddedValkey
from shared.settings import get_settings

HEALTH_TIMEOUT_S = 60.0


def say(line: str) -> None:
    print(f"» {line}", flush=True)


def _wait_healthy(url: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args!r} exited with {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"API not healthy after {HEALTH_TIMEOUT_S:.0f} s ({url})")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(workers: int) -> int:
    started = time.monotonic()
    settings = get_settings()
    data = Path(settings.data_dir)
    env = dict(os.environ)
    servers: list[EmbeddedPostgres | EmbeddedValkey] = []
    if not settings.database_url:
        pg = EmbeddedPostgres(data / "postgres", log=say)
        env["DATABASE_URL"] = pg.start()
        servers.append(pg)
        say(f"PostgreSQL (embedded) at {env['DATABASE_URL']}")
    if not settings.redis_url:
        valkey = EmbeddedValkey(data / "valkey", persist=True, log=say)
        env["REDIS_URL"] = valkey.start()
        servers.append(valkey)
        say(f"Valkey (embedded) at {env['REDIS_URL']}")
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "app"], env=env))
        procs += [
            subprocess.Popen([sys.executable, "-m", "worker"], env=env) for _ in range(workers)
        ]
        base = f"http://localhost:{settings.port}"
        _wait_healthy(f"http://127.0.0.1:{settings.port}/health", procs)
        say(f"ready in {time.monotonic() - started:.1f} s")
        say(f"API        {base}  (docs {base}/docs)")
        say(f"WebSocket  ws://localhost:{settings.port}/api/orders/execute")
        say(
            f"workers    {workers} x concurrency {settings.worker_concurrency}, "
            f"latency scale {settings.sim_latency_scale}"
        )
        say(f"metrics    {base}/metrics; workers from :{settings.worker_metrics_port} up (logged)")
        say("try it     make demo  (or .venv/bin/python demo.py); Ctrl-C here stops all")
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        say("stopping …")
        _stop(procs)
        for server in reversed(servers):
            server.stop()
        say("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="start databases (if needed), the API and workers")
    run_cmd.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    args = parser.parse_args()
    raise SystemExit(run(args.workers))


if __name__ == "__main__":
    main()
