"""The servers and engine processes a benchmark runs against, and what they cost in CPU and RSS.

PostgreSQL runs with its durable defaults (fsync, synchronous commit) and Valkey with the
append-only file flushed every second, as `make run` starts them. Each scenario gets a fresh
database and an empty Redis, and starts its own API and worker processes (`python -m app`,
`python -m worker`) with the knobs it needs. Every child runs in its own process group so it
can be ended with everything it started, and an atexit hook ends whatever is still running.
"""

import asyncio
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bench.http import get_json
from devstack import processes
from devstack.processes import HOST as HOST
from devstack.processes import free_port, signal_group
from devstack.servers import ServerPair
from shared.db import migrate

TREE = Path(__file__).resolve().parents[1]  # the checkout this benchmark belongs to

PYTHON = sys.executable
HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

_live: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live.values()):
        if proc.poll() is None:
            signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    _live.clear()


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start a child in a process group of its own, its output appended to `log`; the atexit
    hook kills it if the run ends without stopping it."""
    proc = processes.spawn(argv, env, log=log, cwd=cwd)
    _live[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the child's group, then SIGKILL it if it has not exited in time."""
    processes.stop_child(proc, timeout_s)
    _live.pop(proc.pid, None)


def tail(path: Path, lines: int = 25) -> str:
    """The end of a log file (the temporary folder it lives in is gone after the run)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Servers(ServerPair):
    """PostgreSQL and Valkey for the whole suite, in a temporary folder.

    Every process reaches them over Unix sockets, as processes sharing a machine with their
    database should: on this kind of machine a round trip costs ~20-25 µs less CPU than over
    TCP loopback, client and server together (bench/README.md, item 13). `tcp=True` uses TCP
    loopback instead, as for a database on another host.
    """

    def __init__(self, tcp: bool = False) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="oee-bench-")
        root = Path(self._tmp.name)
        os.chmod(root, 0o755)  # as root, PostgreSQL runs as `nobody`, which must get in
        super().__init__(root, fast=False, persist=True, unix_sockets=not tcp)
        self.transport = "TCP loopback" if tcp else "Unix sockets"
        self.admin_url = ""

    @property
    def redis_url(self) -> str:
        """Valkey's URL; "" before start(), so a scenario's environment can be built first."""
        return super().redis_url if self.valkey.started else ""

    def start(self, timeout_s: float = 60) -> None:
        super().start(timeout_s)
        self.admin_url = self.db_url("postgres")

    async def enable_stat_statements(self) -> None:
        """Load pg_stat_statements (a restart of this suite's own server), for profiling."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await conn.close()
        self.pg.stop()
        self.pg.start(timeout_s=60)
        self.admin_url = self.db_url("postgres")  # the port may have changed

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            super().stop()
        self._tmp.cleanup()

    @property
    def pg_pid(self) -> int:
        return self.pids("postgres")[0]

    @property
    def valkey_pid(self) -> int:
        return self.pids("valkey")[0]

    def db_url(self, name: str) -> str:
        return self.pg.local_url(name)

    async def fresh_database(self, name: str) -> str:
        """Drop and create database `name`, apply the migrations, and return its URL."""
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.db_url(name))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return self.db_url(name)

    async def flush_redis(self) -> None:
        redis = Redis.from_url(self.redis_url)
        try:
            await redis.flushall()
        finally:
            await redis.aclose()


# Every knob a benchmark may leave alone is pinned here, so a developer's environment or `.env`
# cannot change the figures. Admission control is off: a benchmark client is one address.
BASE_KNOBS = {
    "RATE_LIMIT_PER_S": "0",
    "MAX_QUEUE_DEPTH": "0",
    "SIM_LATENCY_SCALE": "0",
    "SIM_DROP_RATE": "0",
    "SIM_EXPIRY_RATE": "0",
    "SIM_RPC_TIMEOUT_RATE": "0",
    "SIM_TICK_MS": "1000",
    "WORKER_CONCURRENCY": "10",
    "SHUTDOWN_GRACE_S": "1",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "text",
}


@dataclass
class EngineProcesses:
    """One scenario's API and worker processes against a fresh database."""

    servers: Servers
    name: str
    knobs: dict[str, str] = field(default_factory=dict)
    port: int = 0
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    database_url: str = ""

    @property
    def dir(self) -> Path:
        path = self.servers.root / self.name
        path.mkdir(exist_ok=True)
        return path

    def env(self, **overrides: Any) -> dict[str, str]:
        env = dict(os.environ)
        env.update(BASE_KNOBS)
        env.update(self.knobs)
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.servers.redis_url,
            HOST=HOST,
            PORT=str(self.port),
            DATA_DIR=str(self.servers.root / "data"),
            PYTHONUNBUFFERED="1",
            # The engine of this very tree: `python -m app` in a scenario's folder would
            # otherwise import whichever checkout the environment has installed (an editable
            # install points at one), so a copy of the tree benchmarked in an A/B would run the
            # other copy's API and worker.
            PYTHONPATH=os.pathsep.join(filter(None, [str(TREE), os.environ.get("PYTHONPATH")])),
        )
        return env

    async def prepare(self) -> None:
        """A fresh database and an empty Redis; no process started yet."""
        self.database_url = await self.servers.fresh_database(f"bench_{self.name}")
        await self.servers.flush_redis()
        self.port = free_port()

    async def start_api(self, **overrides: Any) -> None:
        argv = [PYTHON, "-m", "app"]
        self.api = spawn(argv, self.env(**overrides), self.dir / "api.log", self.dir)
        await self.wait_healthy()

    def start_worker(self, **overrides: Any) -> subprocess.Popen[bytes]:
        argv = [PYTHON, "-m", "worker"]
        log = self.dir / f"worker{len(self.workers)}.log"
        proc = spawn(argv, self.env(**overrides), log, self.dir)
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop(proc)
        self.workers.clear()

    def stop(self) -> None:
        self.stop_workers()
        if self.api is not None:
            stop(self.api)
            self.api = None

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(
                    f"API exited with {self.api.returncode}:\n{tail(self.dir / 'api.log')}"
                )
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
                status, _ = await get_json(HOST, self.port, "/health")
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"API not healthy after {HEALTH_TIMEOUT_S:.0f} s")

    async def health(self) -> dict[str, Any]:
        _, body = await get_json(HOST, self.port, "/health", timeout_s=10)
        return dict(body)

    async def wait_worker_ready(self, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
        """Wait until the worker logged that it is ready (its on_startup finished)."""
        log = self.dir / f"worker{self.workers.index(proc)}.log"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{tail(log)}")
            if log.exists() and b"worker ready" in log.read_bytes():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"worker not ready after {timeout_s:.0f} s; see {log}")


# --- accounting -------------------------------------------------------------------------------


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total: float = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


class CpuMeter:
    """CPU seconds per role (api, worker, postgres, valkey; `bench` is this process) between
    two marks."""

    def __init__(self, roles: Mapping[str, Iterable[int]]) -> None:
        self.roles = {name: list(pids) for name, pids in roles.items()}
        self._start = self._sample()
        self._t0 = time.monotonic()
        self._sys0 = psutil.cpu_times()

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(_tree_cpu_s(p) for p in pids) for name, pids in self.roles.items()}
        sample["bench"] = time.process_time()  # this orchestrating process, children aside
        return sample

    def stop(self) -> dict[str, Any]:
        """{role: cpu seconds}, plus the wall time and how busy the whole machine was."""
        end = self._sample()
        wall_s = time.monotonic() - self._t0
        sys1 = psutil.cpu_times()
        idle = (sys1.idle - self._sys0.idle) + (
            getattr(sys1, "iowait", 0) - getattr(self._sys0, "iowait", 0)
        )
        cores = psutil.cpu_count() or 1
        return {
            "wall_s": wall_s,
            "cpu_s": {k: round(end[k] - self._start.get(k, 0.0), 3) for k in end},
            "machine_busy_pct": round(100 * (1 - idle / max(wall_s * cores, 1e-9)), 1),
            "cores": cores,
        }


class CpuGauge:
    """CPU % of named processes since the previous call, for progress lines."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                self._procs[name] = psutil.Process(pid)
                self._procs[name].cpu_percent(None)

    def line(self) -> str:
        parts = []
        for name, proc in self._procs.items():
            try:
                parts.append(f"{name} {proc.cpu_percent(None):3.0f}%")
            except psutil.NoSuchProcess:
                parts.append(f"{name} gone")
        return "  ".join(parts)
