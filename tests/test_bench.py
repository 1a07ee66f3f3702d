"""The benchmark harness measures the code it belongs to."""

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from bench import framework
from bench.instructions import DRIVER
from bench.stack import PYTHON, TREE, EngineProcesses, Servers
from tests.conftest import Infra


def test_a_scenarios_engine_imports_the_benchmarks_own_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m app` in a scenario's folder must import this tree's `app` and `worker`, not
    another checkout the environment can also import (an editable install, or one on
    PYTHONPATH as here): an A/B between two copies of the tree depends on it."""
    for package in ("app", "worker"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    servers = Servers()
    try:
        engine = EngineProcesses(servers, "imports")
        found = subprocess.run(
            [PYTHON, "-c", "import app, worker; print(app.__file__); print(worker.__file__)"],
            env=engine.env(),
            cwd=engine.dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
    finally:
        servers.stop()
    assert [Path(f).resolve().parent.parent for f in found] == [TREE, TREE]


async def test_the_instruction_counts_driver_submits_orders_through_this_trees_api(
    database_url: str, redis: Redis, infra: Infra, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """`bench.instructions` counts what `bench/accept_driver.py` does; the driver must really
    get orders accepted by this tree's app (a driver that failed fast would count nothing)."""
    env = os.environ | {
        "DATABASE_URL": database_url,
        "REDIS_URL": infra.redis_url,
        "RATE_LIMIT_PER_S": "0",
        "MAX_QUEUE_DEPTH": "0",
        "DATA_DIR": str(tmp_path),
    }
    driver = await asyncio.create_subprocess_exec(PYTHON, "-P", str(DRIVER), "5", cwd=TREE, env=env)
    assert await asyncio.wait_for(driver.wait(), 120) == 0
    # 50 warm-up orders, then the 5 measured ones
    assert await db.fetchval("SELECT count(*) FROM orders WHERE status = 'pending'") == 55


async def test_the_framework_benchmark_drives_real_requests_both_ways(
    database_url: str, infra: Infra, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """`bench.framework` compares the app as served with its handlers called directly; both
    sides must really do the work (an order accepted, a socket closed 4404), or the difference
    it reports would be meaningless."""
    cfg = framework.Config(batch=3, rounds=2)
    figures = await framework.measure(database_url, infra.redis_url, str(tmp_path), cfg)
    # every POST, served or direct, in the warm-up round too: one accepted order each
    assert await db.fetchval("SELECT count(*) FROM orders") == 2 * (cfg.rounds + 1) * cfg.batch
    for name in ("post", "socket"):
        assert figures[name]["served_us"] > 0 and figures[name]["handler_us"] > 0, figures
