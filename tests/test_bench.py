"""The benchmark harness measures the code it belongs to."""

import subprocess
from pathlib import Path

import pytest

from bench.stack import PYTHON, TREE, EngineProcesses, Servers


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
