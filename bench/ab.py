"""`python -m bench.ab REV [REV ...]`: the same benchmark on several revisions, alternated in one
sitting, and each one's figures against the one before it, round by round.

On a shared machine a figure moves by tens of percent between minutes, so two releases are only
compared within one sitting, taking turns. Listing the commits between two releases in order
also says which change cost what: each step's ratio is taken within a round (the two runs a
few tens of seconds apart), then the median over rounds. Ratios of consecutive revisions
multiply: the product over a run of steps is that run's end against its start.

Each revision gets a detached git worktree (`--trees`, reused when it already holds that
commit) and runs its own `bench` there (`python -m bench ARGS --out ...`), so its API and
worker are its own code (bench/stack.py, TREE). They all run on this interpreter: a revision
whose requirements.lock pins a version this environment does not have is refused before
anything runs. Rounds go forwards, then backwards, so no revision always runs first.

CPU per order is also given against the load generators' own CPU per order in the same run
("÷ clients"): the generators are the same code in every revision, so that ratio cancels
much of the machine's speed of the moment.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.clients import say

HERE = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = "--only e2e --runs 1 --duration 10"

Figures = dict[str, float]


@dataclass(frozen=True)
class Revision:
    label: str  # as given on the command line
    commit: str
    tree: Path


def _servers_ms(cpu: Mapping[str, float]) -> float:
    return cpu["api"] + cpu["worker"] + cpu["postgres"] + cpu["valkey"]


def _median_of(
    runs: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], float]
) -> float:
    return statistics.median(get(run) for run in runs)


def e2e_figures(e2e: Mapping[str, Any]) -> Figures:
    """The figures an e2e result is compared by (medians over its own runs)."""
    summary, cpu = e2e["summary"], e2e["summary"]["cpu_ms_per_order"]
    draining, alone = e2e["post_at_rate"], e2e["post_no_worker"]
    return {
        "orders/s": summary["orders_per_s"],
        "servers CPU ms/order": _servers_ms(cpu),
        "API ÷ clients CPU": cpu["api"] / cpu["clients"],
        "worker ÷ clients CPU": cpu["worker"] / cpu["clients"],
        "servers ÷ clients CPU": _servers_ms(cpu) / cpu["clients"],
        "POST p99 ms, 500/s while draining": _median_of(draining, lambda r: r["submit_ms"]["p99"]),
        "POSTs/s served of 500, draining": _median_of(draining, lambda r: r["achieved_per_s"]),
        "POST p99 ms, 500/s no worker": _median_of(alone, lambda r: r["submit_ms"]["p99"]),
        "API CPU ms/POST, no worker": _median_of(
            alone, lambda r: r["cpu"]["cpu_ms_per_order"]["api"]
        ),
    }


def fanout_figures(fanout: Mapping[str, Any]) -> Figures:
    """Delivery p99 at each subscriber level (all orders started at once, or paced by a
    WORKER_CONCURRENCY below the number of orders)."""
    found: Figures = {}
    for level in fanout["levels"]:
        name = f"fan-out p99 ms, {level['subscribers']:,} subscribers"
        concurrency = level.get("worker_concurrency", level["orders"])
        if concurrency < level["orders"]:
            name += f", WORKER_CONCURRENCY {concurrency}"
        found[name] = level["delivery_ms"]["p99"]
    return found


def figures(results: Mapping[str, Any]) -> Figures:
    """Every comparable figure in one `bench` results file."""
    scenarios = results["scenarios"]
    found: Figures = {}
    if "e2e" in scenarios:
        found |= e2e_figures(scenarios["e2e"])
    if "fanout" in scenarios:
        found |= fanout_figures(scenarios["fanout"])
    return found


def step_ratios(
    rounds: Sequence[Mapping[str, Figures]], labels: Sequence[str]
) -> dict[tuple[str, str], dict[str, list[float]]]:
    """For each pair of consecutive labels, each figure's ratio (later ÷ earlier) per round,
    over the rounds where both ran."""
    steps: dict[tuple[str, str], dict[str, list[float]]] = {}
    for before, after in itertools.pairwise(labels):
        per_figure: dict[str, list[float]] = {}
        for ran in rounds:
            if before not in ran or after not in ran:
                continue
            for name, value in ran[after].items():
                old = ran[before].get(name)
                if old:
                    per_figure.setdefault(name, []).append(value / old)
        steps[(before, after)] = per_figure
    return steps


def _cell(ratios: Sequence[float]) -> str:
    if not ratios:
        return "-"
    each = ", ".join(f"{r:.2f}" for r in ratios)
    return f"**{statistics.median(ratios):.2f}** ({each})"


def markdown(rounds: Sequence[Mapping[str, Figures]], revisions: Sequence[Revision]) -> str:
    """The medians of each revision, then each step's ratios per round and their median."""
    labels = [r.label for r in revisions]
    names = list(dict.fromkeys(n for ran in rounds for figs in ran.values() for n in figs))
    lines = [f"{len(rounds)} rounds; revisions in order: "]
    lines[0] += ", ".join(f"{r.label} ({r.commit[:7]})" for r in revisions)
    lines += ["", "| figure | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name in names:
        cells = []
        for label in labels:
            values = [ran[label][name] for ran in rounds if name in ran.get(label, {})]
            cells.append(f"{statistics.median(values):.3g}" if values else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Each step, later ÷ earlier: median (per round).", ""]
    steps = step_ratios(rounds, labels)
    lines += ["| figure | " + " | ".join(f"{a} → {b}" for a, b in steps) + " |"]
    lines += ["|---" * (len(steps) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_cell(s.get(name, [])) for s in steps.values()))
        lines[-1] += " |"
    return "\n".join(lines) + "\n"


def round_order(labels: Sequence[str], round_no: int) -> list[str]:
    """Forwards in odd rounds, backwards in even ones (round 1 is the first)."""
    return list(labels) if round_no % 2 else list(reversed(labels))


def missing_pins(lock: str, installed: Callable[[str], str] = metadata.version) -> list[str]:
    """The `name==version` lines of a requirements.lock this environment does not satisfy."""
    wrong = []
    for line in lock.splitlines():
        name, sep, version = line.strip().partition("==")
        if not sep or name.startswith("#"):
            continue
        try:
            have = installed(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong.append(f"{name}=={version} (here: {have or 'not installed'})")
    return wrong


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def prepare(labels: Sequence[str], trees: Path) -> list[Revision]:
    """A worktree per revision under `trees`, each checked out at its commit."""
    revisions = []
    for label in labels:
        commit = _git("rev-parse", "--verify", f"{label}^{{commit}}")
        tree = trees / commit[:12]
        if not (tree / ".git").exists():
            _git("worktree", "add", "--detach", str(tree), commit)
        elif _git("-C", str(tree), "rev-parse", "HEAD") != commit:
            raise SystemExit(f"{tree} holds another commit; remove it or pick other --trees")
        wrong = missing_pins((tree / "requirements.lock").read_text())
        if wrong:
            raise SystemExit(
                f"{label}: this environment lacks what its requirements.lock pins: "
                + "; ".join(wrong)
            )
        revisions.append(Revision(label, commit, tree))
    return revisions


def run_one(revision: Revision, bench_args: Sequence[str], out: Path) -> Figures:
    """One `python -m bench` in the revision's own tree; its figures."""
    argv = [sys.executable, "-m", "bench", *bench_args, "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with (out.parent / f"{out.name}.log").open("w") as log:
        done = subprocess.run(argv, cwd=revision.tree, env=env, stdout=log, stderr=log)
    if done.returncode != 0:
        raise SystemExit(f"{revision.label}: bench failed (exit {done.returncode}), see {log.name}")
    return figures(json.loads((out / "latest.json").read_text()))


def sitting(
    revisions: Sequence[Revision], rounds: int, bench_args: Sequence[str], out: Path
) -> Iterator[dict[str, Figures]]:
    """Runs every revision once per round, alternating direction; yields each finished round."""
    by_label = {r.label: r for r in revisions}
    total, done, started = rounds * len(revisions), 0, time.monotonic()
    for round_no in range(1, rounds + 1):
        ran: dict[str, Figures] = {}
        for label in round_order(list(by_label), round_no):
            left = ""
            if done:
                per_run_s = (time.monotonic() - started) / done
                left = f", ~{per_run_s * (total - done) / 60:.0f} min left"
            say(f"» round {round_no}/{rounds}: {label} (run {done + 1} of {total}{left})")
            folder = out / f"r{round_no}-{label.replace('/', '_')}"
            ran[label] = run_one(by_label[label], bench_args, folder)
            done += 1
        yield ran


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("revisions", nargs="+", help="commits or refs, oldest first")
    parser.add_argument("--rounds", type=int, default=4, help="rounds (4)")
    parser.add_argument("--args", default=DEFAULT_ARGS, help=f"bench arguments ({DEFAULT_ARGS})")
    parser.add_argument("--trees", type=Path, default=HERE.parent / "oee-ab-trees")
    parser.add_argument("--out", type=Path, default=HERE / "bench" / "results" / "ab")
    args = parser.parse_args(argv)
    if len(args.revisions) < 2 or args.rounds < 1:
        parser.error("give at least two revisions and one round")
    if len(set(args.revisions)) < len(args.revisions):
        parser.error("each revision once")
    return args


def main() -> None:
    args = parse_args()
    revisions = prepare(args.revisions, args.trees)
    args.out.mkdir(parents=True, exist_ok=True)
    rounds: list[dict[str, Figures]] = []
    for ran in sitting(revisions, args.rounds, args.args.split(), args.out):
        rounds.append(ran)
        (args.out / "ab.json").write_text(json.dumps(rounds, indent=1))
    table = markdown(rounds, revisions)
    (args.out / "ab.md").write_text(table)
    say(table)
    say(f"written to {args.out / 'ab.md'} (figures per round: ab.json)")


if __name__ == "__main__":
    main()
