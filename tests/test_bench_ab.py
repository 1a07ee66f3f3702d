"""`bench.ab` reads what `bench` writes, and compares revisions step by step, round by round."""

import json
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from bench import ab
from bench.stack import TREE

# Written by a real `python -m bench` run (quick mode: e2e, realistic, fanout, soak).
QUICK = json.loads((TREE / "bench" / "results" / "quick.json").read_text())


def test_the_figures_come_from_a_real_results_file() -> None:
    found = ab.figures(QUICK)
    e2e = QUICK["scenarios"]["e2e"]["summary"]
    assert found["orders/s"] == e2e["orders_per_s"]
    cpu = e2e["cpu_ms_per_order"]
    servers = cpu["api"] + cpu["worker"] + cpu["postgres"] + cpu["valkey"]
    assert found["servers ÷ clients CPU"] == pytest.approx(servers / cpu["clients"])
    draining = [r["submit_ms"]["p99"] for r in QUICK["scenarios"]["e2e"]["post_at_rate"]]
    assert found["POST p99 ms, 500/s while draining"] == sorted(draining)[len(draining) // 2]
    levels = QUICK["scenarios"]["fanout"]["levels"]
    burst = next(
        lv for lv in levels if lv["subscribers"] == 5000 and lv["worker_concurrency"] == 100
    )
    paced = next(lv for lv in levels if lv["worker_concurrency"] == 10)
    assert found["fan-out p99 ms, 5,000 subscribers"] == burst["delivery_ms"]["p99"]
    assert (
        found["fan-out p99 ms, 5,000 subscribers, WORKER_CONCURRENCY 10"]
        == (paced["delivery_ms"]["p99"])
    )


def test_each_step_is_a_ratio_within_a_round_and_a_revision_missing_from_a_round_is_skipped() -> (
    None
):
    rounds = [
        {"a": {"orders/s": 100.0}, "b": {"orders/s": 90.0}, "c": {"orders/s": 99.0}},
        {"a": {"orders/s": 200.0}, "b": {"orders/s": 190.0}},
    ]
    steps = ab.step_ratios(rounds, ["a", "b", "c"])
    assert steps[("a", "b")]["orders/s"] == [pytest.approx(0.9), pytest.approx(0.95)]
    assert steps[("b", "c")]["orders/s"] == [pytest.approx(1.1)]
    revisions = [ab.Revision(x, x * 40, Path(x)) for x in "abc"]
    table = ab.markdown(rounds, revisions)
    assert "| orders/s | 150 | 140 | 99 |" in table
    assert "**0.93** (0.90, 0.95)" in table and "**1.10** (1.10)" in table


def test_rounds_alternate_direction() -> None:
    assert ab.round_order(["a", "b", "c"], 1) == ["a", "b", "c"]
    assert ab.round_order(["a", "b", "c"], 2) == ["c", "b", "a"]
    assert ab.round_order(["a", "b", "c"], 3) == ["a", "b", "c"]


def test_a_revision_pinning_what_this_environment_lacks_is_named() -> None:
    versions = {"fastapi": "0.165.0", "arq": "0.28.0"}

    def installed(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    lock = "fastapi==0.165.0\narq==0.27.0\nplaywright==1.65.2\n# comment\n"
    assert ab.missing_pins(lock, installed) == [
        "arq==0.27.0 (here: 0.28.0)",
        "playwright==1.65.2 (here: not installed)",
    ]
    assert ab.missing_pins((TREE / "requirements.lock").read_text()) == []


def test_each_revision_gets_its_own_worktree_at_its_commit(tmp_path: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=TREE, check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        (revision,) = ab.prepare(["HEAD"], tmp_path)
        assert revision.commit == head
        checked_out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=revision.tree, capture_output=True, text=True
        ).stdout.strip()
        assert checked_out == head and (revision.tree / "pyproject.toml").exists()
        again = ab.prepare(["HEAD"], tmp_path)  # reused, not added twice
        assert again == [revision]
        with pytest.raises(SystemExit, match="no-such-revision"):
            ab.prepare(["no-such-revision"], tmp_path)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tmp_path / head[:12])], cwd=TREE
        )
