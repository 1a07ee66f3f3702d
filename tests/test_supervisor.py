"""`python -m devstack run` (what `make run` runs) as a real subprocess: its supervisor restarts a
process that dies while the rest keep running, refuses a taken port before saying "ready", and
stops only what it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from devstack.cli import demo_command
from devstack.processes import pid_alive
from devstack.servers import ServerPair
from tests.conftest import free_port
from tests.procs import (
    BASE_ENV,
    ROOT,
    assert_executed_once,
    assert_gapless,
    submit,
    total_swaps_landed,
    wait_order_terminal,
)

START_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 30.0
_POLL_S = 0.05
_STARTED = re.compile(r"» (\S+) (?:started|restarted), pid (\d+)")


def run_env(data_dir: Path, port: int, **overrides: str) -> dict[str, str]:
    """The environment of a `make run` of this test's own: its data folder and port, two
    workers, quick simulated latency, and no external servers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PG", "TEST_")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env |= BASE_ENV | {"DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "PORT": str(port)}
    env |= {"WORKERS": "2"}
    env |= {"SHUTDOWN_GRACE_S": "3", "PYTHONUNBUFFERED": "1"}
    return env | overrides


@dataclass
class Run:
    """One `python -m devstack run` subprocess and its output."""

    popen: subprocess.Popen[bytes]
    out: Path
    port: int
    data_dir: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The latest pid the supervisor reported for each of its processes."""
        return {name: int(pid) for name, pid in _STARTED.findall(self.text())}

    def url_of(self, server: str) -> str:
        found = re.search(rf"» {server} \(embedded\) at (\S+)", self.text())
        assert found, self.text()
        return found.group(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_for(self, pattern: str, timeout_s: float = EVENT_TIMEOUT_S) -> re.Match[str]:
        """Wait until the output matches `pattern` (a regex); the match."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert time.monotonic() < deadline, f"never printed {pattern!r}:\n{self.text()}"
            assert self.popen.poll() is None, f"exited {self.popen.returncode}:\n{self.text()}"
            await asyncio.sleep(_POLL_S)  # sleep-ok: polling the supervisor's output

    async def exit_code(self, timeout_s: float = EVENT_TIMEOUT_S) -> int:
        return await asyncio.to_thread(self.popen.wait, timeout_s)


def spawn_run(data_dir: Path, port: int, out: Path, **overrides: str) -> Run:
    with out.open("ab") as sink:
        popen = subprocess.Popen(
            [sys.executable, "-m", "devstack", "run"],
            cwd=ROOT,
            env=run_env(data_dir, port, **overrides),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # A terminal of its own, as it were: a Ctrl-C is SIGINT to this group.
            start_new_session=True,
        )
    return Run(popen, out, port, data_dir)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="oee-run-") as tmp:
        os.chmod(tmp, 0o755)  # as root PostgreSQL runs as `nobody`, which must reach its data
        yield Path(tmp)


@contextlib.asynccontextmanager
async def make_run(**overrides: str) -> AsyncIterator[Run]:
    """A running `make run` (ready), stopped with SIGINT afterwards; whatever is left of it
    (after a test killed the supervisor itself) is killed."""
    with scratch() as root:
        run = spawn_run(root / "data", free_port(), root / "run.log", **overrides)
        try:
            await run.wait_for(r"» ready in", START_TIMEOUT_S)
            yield run
        finally:
            if run.popen.poll() is None:
                run.popen.send_signal(signal.SIGINT)
                try:
                    await run.exit_code()
                except subprocess.TimeoutExpired:
                    run.popen.kill()
            for pid in run.pids().values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                ServerPair(root / "data").kill()


@contextlib.asynccontextmanager
async def another_run(first: Run, port: int, name: str, **overrides: str) -> AsyncIterator[Run]:
    """One more `make run` on the first one's data folder (not waited for); killed with its
    processes afterwards if it is still running."""
    run = spawn_run(first.data_dir, port, first.data_dir.parent / f"{name}.log", **overrides)
    try:
        yield run
    finally:
        if run.popen.poll() is None:
            run.popen.kill()
            run.popen.wait(10)
            for pid in run.pids().values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def wait_healthy(base_url: str, timeout_s: float = EVENT_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get("/health")
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
            assert time.monotonic() < deadline, f"{base_url} not healthy"
            await asyncio.sleep(_POLL_S)  # sleep-ok: polling for readiness


async def wait_gone(pids: list[int], timeout_s: float = EVENT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while any(map(pid_alive, pids)):
        alive = [p for p in pids if pid_alive(p)]
        assert time.monotonic() < deadline, f"still running: {alive}"
        await asyncio.sleep(_POLL_S)  # sleep-ok: waiting for processes to exit


async def wait_in_flight(database_url: str, count: int) -> int:
    """Wait until at least `count` orders are being worked on (past `pending`, not terminal)."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            working: int = await conn.fetchval(
                "SELECT count(*) FROM orders WHERE status IN ('routing', 'building', 'submitted')"
            )
            if working >= count:
                return working
            assert time.monotonic() < deadline, f"only {working} orders in flight"
            await asyncio.sleep(_POLL_S)  # sleep-ok: polling the source of truth with a deadline
    finally:
        await conn.close()


async def submit_many(http: httpx.AsyncClient, count: int) -> list[str]:
    accepted = await asyncio.gather(*(submit(http, "0.01") for _ in range(count)))
    return [a["orderId"] for a in accepted]


async def assert_all_executed_once(run: Run, order_ids: list[str]) -> dict[str, int]:
    """Every order reaches a terminal status, each confirmed one landed exactly once on the
    cluster and none of the others did; the count per status."""
    database_url, redis_url = run.url_of("PostgreSQL"), run.url_of("Valkey")
    rows = await asyncio.gather(
        *(wait_order_terminal(database_url, oid, 60, redis_url=redis_url) for oid in order_ids)
    )
    conn = await asyncpg.connect(database_url)
    redis = Redis.from_url(redis_url)
    try:
        for order_id in order_ids:
            await assert_executed_once(conn, redis, order_id)
        await assert_gapless(conn)
        swaps, pool_versions = await total_swaps_landed(redis)
    finally:
        await redis.aclose()
        await conn.close()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    # Counted on the cluster too, which catches a swap signed without a `building` event.
    assert swaps == pool_versions == counts.get("confirmed", 0), (swaps, pool_versions, counts)
    return counts


@pytest.mark.chaos
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_a_dead_worker_is_restarted_and_no_order_is_lost(signum: int) -> None:
    # Two job slots per worker: with more than two orders in flight, both workers hold some.
    async with (
        make_run(WORKER_CONCURRENCY="2") as run,
        httpx.AsyncClient(base_url=run.base_url, timeout=10) as http,
    ):
        before = run.pids()
        assert set(before) == {"api", "worker-1", "worker-2"}, run.text()
        in_flight = await submit_many(http, 12)
        working = await wait_in_flight(run.url_of("PostgreSQL"), 3)

        os.kill(before["worker-1"], signum)
        killed_at = time.monotonic()
        restarted = await run.wait_for(r"» worker-1 restarted, pid (\d+)")
        restart_s = time.monotonic() - killed_at
        # SIGTERM is a graceful stop: the worker finishes or hands back its jobs and exits.
        how = "killed by SIGKILL" if signum == signal.SIGKILL else "exited with code 0"
        assert f"worker-1 (pid {before['worker-1']}) {how}" in run.text()

        after = run.pids()
        assert int(restarted.group(1)) == after["worker-1"] != before["worker-1"]
        assert (after["api"], after["worker-2"]) == (before["api"], before["worker-2"])
        assert pid_alive(after["api"]) and pid_alive(after["worker-2"])
        later = await submit_many(http, 12)

        counts = await assert_all_executed_once(run, in_flight + later)
        settled_s = time.monotonic() - killed_at
        assert sum(counts.values()) == 24
        assert counts.get("confirmed", 0) > 0, counts
        print(
            f"{signal.Signals(signum).name}: {working} in flight at the kill, restarted after "
            f"{restart_s:.2f} s, all 24 terminal {settled_s:.1f} s after the kill: {counts}"
        )
        # The supervisor and the other processes never stopped.
        assert run.popen.poll() is None
        assert run.pids() == after


@pytest.mark.chaos
async def test_a_killed_api_is_restarted_and_serves_again() -> None:
    async with make_run() as run:
        before = run.pids()
        os.kill(before["api"], signal.SIGKILL)
        killed_at = time.monotonic()
        restarted = await run.wait_for(r"» api restarted, pid (\d+)")
        assert int(restarted.group(1)) != before["api"]
        assert f"api (pid {before['api']}) killed by SIGKILL" in run.text()

        health = await wait_healthy(run.base_url)
        print(f"API killed: healthy again after {time.monotonic() - killed_at:.2f} s")
        assert health["postgres"]["ok"] and health["redis"]["ok"], health
        after = run.pids()
        assert (after["worker-1"], after["worker-2"]) == (before["worker-1"], before["worker-2"])
        async with httpx.AsyncClient(base_url=run.base_url, timeout=10) as http:
            counts = await assert_all_executed_once(run, await submit_many(http, 4))
        assert sum(counts.values()) == 4


@pytest.mark.chaos
async def test_a_second_run_refuses_a_taken_port_and_never_stops_servers_another_uses() -> None:
    async with make_run() as first:
        pair = ServerPair(first.data_dir)
        pg_pid, valkey_pid = pair.pg.live_pid(), pair.valkey.live_pid()
        assert pg_pid is not None and valkey_pid is not None

        # Same checkout, same port: refused before anything starts or "ready" is printed.
        async with another_run(first, first.port, "same") as same:
            assert await same.exit_code() == 2
        assert f"port {first.port} is already in use" in same.text()
        assert f"PORT={first.port + 1} make run" in same.text()
        assert "» ready in" not in same.text() and "already running" not in same.text()

        # Another port: adopts the first one's servers and, stopped, leaves them to it.
        async with another_run(first, free_port(), "second") as second:
            await second.wait_for(r"» ready in", START_TIMEOUT_S)
            assert "PostgreSQL already running" in second.text()
            assert "Valkey already running" in second.text()
            second.popen.send_signal(signal.SIGINT)
            assert await second.exit_code() == 0
        assert "leaving PostgreSQL and Valkey running" in second.text()
        health = await wait_healthy(first.base_url, timeout_s=5)
        assert health["postgres"]["ok"] and health["redis"]["ok"], health
        assert (pair.pg.live_pid(), pair.valkey.live_pid()) == (pg_pid, valkey_pid)

        # The first stops while a third uses its servers: they stay; the last one out stops them.
        async with another_run(first, free_port(), "third") as third:
            await third.wait_for(r"» ready in", START_TIMEOUT_S)
            first.popen.send_signal(signal.SIGINT)
            assert await first.exit_code() == 0
            assert "leaving PostgreSQL and Valkey running" in first.text()
            health = await wait_healthy(third.base_url, timeout_s=5)
            assert health["postgres"]["ok"] and health["redis"]["ok"], health
            assert (pair.pg.live_pid(), pair.valkey.live_pid()) == (pg_pid, valkey_pid)
            third.popen.send_signal(signal.SIGINT)
            assert await third.exit_code() == 0
        assert "» stopped PostgreSQL and Valkey" in third.text()
        assert not pair.pg.is_running() and not pair.valkey.is_running()


@pytest.mark.chaos
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_a_stop_signal_stops_every_process_and_server_the_run_started(signum: int) -> None:
    async with make_run() as run:
        pids = list(run.pids().values())
        pair = ServerPair(run.data_dir)
        server_pids = [pair.pg.live_pid(), pair.valkey.live_pid()]
        assert None not in server_pids
        if signum == signal.SIGINT:  # Ctrl-C: the terminal signals its whole foreground group
            os.killpg(run.popen.pid, signum)
        else:
            run.popen.send_signal(signum)
        assert await run.exit_code() == 0
        assert not any(map(pid_alive, pids)), pids
        assert not pair.pg.is_running() and not pair.valkey.is_running()
        assert "» stopped PostgreSQL and Valkey" in run.text()


@pytest.mark.chaos
async def test_the_processes_die_with_a_killed_supervisor() -> None:
    async with make_run() as run:
        pids = list(run.pids().values())
        run.popen.kill()
        await run.exit_code()
        await wait_gone(pids)

        # Its servers outlive it; the next run takes them over and, last out, stops them.
        pair = ServerPair(run.data_dir)
        assert pair.pg.is_running() and pair.valkey.is_running()
        async with another_run(run, run.port, "next") as after:
            await after.wait_for(r"» ready in", START_TIMEOUT_S)
            assert "PostgreSQL already running" in after.text()
            after.popen.send_signal(signal.SIGINT)
            assert await after.exit_code() == 0
        assert not pair.pg.is_running() and not pair.valkey.is_running()


def test_a_taken_port_is_refused_before_anything_starts() -> None:
    with scratch() as root, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = spawn_run(root / "data", port, root / "run.log")
        assert run.popen.wait(30) == 2
        lines = run.text().strip().splitlines()
        assert lines == [
            f"» port {port} is already in use on 127.0.0.1 (another make run, or another "
            f"program); nothing was started. Choose another port: PORT={port + 1} make run"
        ]
        assert not (root / "data" / "postgres").exists()


def test_the_banner_names_the_demo_command_for_the_port() -> None:
    assert demo_command(3000) == "make demo"
    assert demo_command(3001) == "PORT=3001 make demo"


# The supervisor alone, in a process of its own (it installs signal handlers and forks): a
# child that keeps crashing, and the delays it is restarted after.
_BACKOFF_SCRIPT = """
import os, signal, sys, time
from devstack.supervisor import Supervisor

child_s, stable_s = float(sys.argv[1]), float(sys.argv[2])

def log(line: str) -> None:
    print(f"{time.monotonic():.4f} {line}", flush=True)
    if "(restart 5)" in line:
        os.kill(os.getpid(), signal.SIGTERM)

supervisor = Supervisor(
    dict(os.environ), log, backoff_start_s=0.05, backoff_max_s=0.2, stable_s=stable_s
)
code = f"import time; time.sleep({child_s}); raise SystemExit(3)"  # sleep-ok: the child's run time
supervisor.add("crasher", [sys.executable, "-c", code])
with supervisor.signals() as wake:
    supervisor.start_all()
    supervisor.supervise(wake)
    supervisor.stop_all()
"""


def supervise_a_crasher(child_s: float, stable_s: float) -> tuple[list[float], list[float]]:
    """(the delays the supervisor announced, the gaps it actually left between an exit and
    the restart), over five restarts."""
    done = subprocess.run(
        [sys.executable, "-c", _BACKOFF_SCRIPT, str(child_s), str(stable_s)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    announced, gaps, exited_at = [], [], 0.0
    for line in done.stdout.splitlines():
        at, text = line.split(" ", 1)
        if found := re.search(r"exited with code 3 after .*; restarting in ([\d.]+) s", text):
            announced.append(float(found.group(1)))
            exited_at = float(at)
        elif "restarted" in text:
            gaps.append(float(at) - exited_at)
    assert len(gaps) == 5, done.stdout
    return announced[:5], gaps


def test_a_crashing_child_is_restarted_with_doubling_delays_up_to_the_cap() -> None:
    announced, gaps = supervise_a_crasher(child_s=0, stable_s=60)
    assert announced == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert all(gap >= delay for gap, delay in zip(gaps, announced, strict=True)), gaps


def test_the_delay_starts_over_once_a_child_has_stayed_up() -> None:
    announced, _ = supervise_a_crasher(child_s=0.3, stable_s=0.2)
    assert announced == [0.05] * 5
