"""`python -m devstack run`: the whole engine on one machine (what `make run` calls).

Refuses at once when the API port is taken. Starts embedded PostgreSQL and Valkey under
`DATA_DIR` unless DATABASE_URL / REDIS_URL are set (adopting servers another `make run` of the
same checkout already runs), then the API and `--workers` workers under a supervisor that
restarts any of them that dies. Prints where everything is once the API is healthy. Ctrl-C or
SIGTERM stops the stack: its processes, and the embedded servers unless another `make run`
on the same data still uses them (then the last one to stop stops them).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

from devstack.processes import DevstackError, describe_exit, port_is_free
from devstack.server import Server
from devstack.servers import ServerPair, Users
from devstack.supervisor import Supervisor
from shared.settings import Settings, get_settings

HEALTH_TIMEOUT_S = 60.0
DEFAULT_PORT = 3000


def say(line: str) -> None:
    """A progress line for the person at the terminal."""
    print(f"» {line}", flush=True)


def port_taken_message(host: str, port: int) -> str:
    """The one line `make run` answers with when the API port is in use."""
    return (
        f"port {port} is already in use on {host} (another make run, or another program); "
        f"nothing was started. Choose another port: PORT={port + 1} make run"
    )


def demo_command(port: int) -> str:
    """How to run the demo against an API on `port`."""
    return "make demo" if port == DEFAULT_PORT else f"PORT={port} make demo"


def _loopback(host: str) -> str:
    """The address to reach a server bound to `host` from this machine."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _start_servers(settings: Settings, env: dict[str, str], used: list[Server]) -> None:
    """Start (or adopt) the embedded servers that no URL replaces, adding each to `used` as
    soon as it runs (so a failure later still stops it); sets their URLs in `env`."""
    pair = ServerPair(Path(settings.data_dir).absolute(), persist=True, log=say)
    if not settings.database_url:
        env["DATABASE_URL"] = pair.pg.start()
        used.append(pair.pg)
        say(f"PostgreSQL (embedded) at {env['DATABASE_URL']}")
    if not settings.redis_url:
        env["REDIS_URL"] = pair.valkey.start()
        used.append(pair.valkey)
        say(f"Valkey (embedded) at {env['REDIS_URL']}")


def _stop_servers(used: list[Server], users: Users, data_dir: Path) -> None:
    """Stop the embedded servers, unless another make run (or `servers up`) still uses them.

    So a run never pulls the servers from under another one, whichever started them, and the
    last one to stop leaves nothing running (servers a killed run left behind included).
    """
    if not used:
        return
    if users.others():
        say(f"leaving {_names(used)} running: another make run on {data_dir} still uses it")
        return
    for server in reversed(used):
        server.stop()
    say(f"stopped {_names(used)}")


def _names(servers: list[Server]) -> str:
    return " and ".join(s.name for s in servers)


# No proxy from the environment: the API is on this machine.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_healthy(supervisor: Supervisor, wake: socket.socket, url: str, settings: Settings) -> str:
    """Wait for the API's /health; "" once healthy, else why the start failed."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while not supervisor.stopping:
        for child in supervisor.exited():
            assert child.proc is not None
            if child.name == "api" and not port_is_free(settings.port, settings.host):
                return port_taken_message(settings.host, settings.port)
            how = describe_exit(child.proc.returncode)
            return f"{child.name} {how} during start-up; see its log above"
        if _healthy(url):
            return ""
        if time.monotonic() > deadline:
            return f"API not healthy after {HEALTH_TIMEOUT_S:.0f} s ({url})"
        supervisor.wait(wake, 0.2)
    return "stopped during start-up"


def _banner(settings: Settings, workers: int, started: float) -> None:
    base = f"http://localhost:{settings.port}"
    say(f"ready in {time.monotonic() - started:.1f} s")
    say(f"dashboard  {base}/  (open it in a browser)")
    say(f"API        {base}  (docs {base}/docs)")
    say(f"WebSocket  ws://localhost:{settings.port}/api/orders/execute")
    say(
        f"workers    {workers} x concurrency {settings.worker_concurrency}, "
        f"latency scale {settings.sim_latency_scale}"
    )
    say(f"metrics    {base}/metrics; workers from :{settings.worker_metrics_port} up (logged)")
    say(f"try it     {demo_command(settings.port)}")
    say("a process that dies is restarted; Ctrl-C here stops all")


def run(workers: int) -> int:
    """Run the stack until SIGINT, SIGTERM or SIGHUP; the exit status."""
    started_at = time.monotonic()
    settings = get_settings()
    if not port_is_free(settings.port, settings.host):
        print(f"» {port_taken_message(settings.host, settings.port)}", file=sys.stderr, flush=True)
        return 2
    data_dir = Path(settings.data_dir).absolute()
    env = dict(os.environ)
    supervisor = Supervisor(env, say, stop_timeout_s=settings.shutdown_grace_s + 10.0)
    supervisor.add("api", [sys.executable, "-m", "app"])
    for number in range(1, workers + 1):
        supervisor.add(f"worker-{number}", [sys.executable, "-m", "worker"])
    used: list[Server] = []
    with Users(data_dir) as users, supervisor.signals() as wake:
        try:
            _start_servers(settings, env, used)
            if supervisor.stopping:
                return 0
            supervisor.start_all()
            health = f"http://{_loopback(settings.host)}:{settings.port}/health"
            failure = _wait_healthy(supervisor, wake, health, settings)
            if failure:
                say(failure)
                return 0 if supervisor.stopping else 1
            _banner(settings, workers, started_at)
            supervisor.supervise(wake)
            return 0
        except DevstackError as error:
            say(f"error: {error}")
            return 1
        finally:
            say("stopping …")
            supervisor.stop_all()
            _stop_servers(used, users, data_dir)
            say("stopped")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m devstack`."""
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="start databases (if needed), the API and workers")
    run_cmd.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    args = parser.parse_args(argv)
    raise SystemExit(run(args.workers))
