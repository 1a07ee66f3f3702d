"""Turning results into tables: printed with rich, written as `latest.md` and `latest.json`."""

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Section = tuple[str, list[str], list[list[Any]], list[str]]  # title, header, rows, notes

TARGETS = {
    "orders_per_s": 500,
    "post_p99_ms": 20,
    "subscribers": 5000,
    "delivery_p99_ms": 100,
    "rss_growth_pct": 10,
}


def _v(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{value}{unit}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT met")


def _e2e(s: dict[str, Any]) -> list[Section]:
    m = s["summary"]
    runs = ", ".join(_v(x) for x in m["orders_per_s_runs"])
    ops = m["orders_per_s"]
    cfg = s["config"]
    label = f"orders/s (1 API, 1 worker at concurrency {cfg['worker_concurrency']})"
    rows = [
        [label, _v(ops), runs, f"≥ 500 ({_verdict(_ge(ops, 500))})"],
        [
            "host speed before each run",
            "",
            ", ".join(speed_text(x) for x in m.get("speed_runs", [])),
            "lower is faster",
        ],
        ["submit (POST) p50 / p95 / p99 ms", _trio(m["submit_ms"], "p50", "p95", "p99"), "", ""],
        ["submit → terminal p50 / p99 ms", _trio(m["e2e_ms"], "p50", "p99"), "", ""],
        ["event delivery p50 / p99 ms", _trio(m["delivery_ms"], "p50", "p99"), "commit→recv", ""],
        ["DB baseline, naive (orders/s)", _v(m["baseline_naive_per_s"]), "same run", ""],
        ["DB baseline, engine statements", _v(m["baseline_actual_per_s"]), "same run", ""],
        ["engine ÷ naive baseline", _r(m["ratio_vs_naive"]), "median of runs", ""],
        ["engine ÷ statements baseline", _r(m["ratio_vs_actual"]), "median of runs", ""],
        ["Redis commands per order", _v(m["redis_commands_per_order"]), "incl. inside Lua", ""],
        ["PostgreSQL commits per order", _v(m["pg_commits_per_order"]), "", ""],
    ]
    for role, ms in m["cpu_ms_per_order"].items():
        rows.append([f"CPU ms per order: {role}", _v(ms), "", ""])
    total = sum(v for v in m["cpu_ms_per_order"].values() if v)
    servers = total - (m["cpu_ms_per_order"].get("clients") or 0)
    if total:
        rows.append(["CPU ms per order: all", _v(total), f"=> <= {_v(2000 / total)}/s on 2 cores",
                     ""])  # fmt: skip
        rows.append(["CPU ms per order: servers only", _v(servers),
                     f"=> <= {_v(2000 / servers)}/s, clients elsewhere", ""])  # fmt: skip
    p = m["post_at_rate"]
    p99 = p["submit_ms"]["p99"]
    rows += _post_rows(p, "while the worker drains", f"p99 ≤ 20 ({_verdict(_le(p99, 20))})")
    if m.get("post_no_worker"):
        rows += _post_rows(m["post_no_worker"], "no worker", "the accept path alone")
    d = s["durability"]
    notes = [
        f"durability: {d['orders']} orders, {d['confirmed']} confirmed, {d['open']} open, "
        f"{d['events']} events in PostgreSQL; {d['seq_mismatch']} with missing seqs, "
        f"{d['wrong_path']} confirmed with a path other than pending→…→confirmed "
        f"({d['retried']} retried; error codes {d['error_codes'] or 'none'})",
        "other processes on the machine used "
        + ", ".join(f"{x} CPU-s" for x in m["other_cpu_s"])
        + " during the e2e runs (not part of this benchmark)",
    ]
    last = s["runs"][-1]["e2e"]
    notes.append(
        f"last run: {last['events']} events received, {last['events_replayed']} replayed "
        f"(the `pending` event precedes the socket), {last['seq_gaps']} gaps, "
        f"{last['bad_closes']} abnormal closes, errors {last['errors'] or 'none'}"
    )
    return [("1. End to end, SIM_LATENCY_SCALE=0", ["figure", "median", "runs / note", "target"],
             rows, notes)]  # fmt: skip


def _post_rows(posts: dict[str, Any], label: str, target: str) -> list[list[str]]:
    """An open-loop POST load's two rows: the rate achieved, then the latencies."""
    busy = posts.get("machine_busy_pct")
    runs = posts.get("submit_p99_runs") or []
    p99_runs = f"; p99 runs {', '.join(_v(x) for x in runs)}" if len(runs) > 1 else ""
    return [
        [f"POST at {posts['target_per_s']}/s open loop, {label}: achieved/s",
         _v(posts["achieved_per_s"]), "" if busy is None else f"machine {_v(busy)} % busy", ""],
        ["  POST p50 / p95 / p99 ms", _trio(posts["submit_ms"], "p50", "p95", "p99"),
         f"from schedule p99 {_v(posts['scheduled_ms_p99'])}{p99_runs}", target],
    ]  # fmt: skip


def _realistic(s: dict[str, Any]) -> list[Section]:
    b = s["brief"]
    brief_rows = [
        ["orders done / submitted", f"{b['completed']}/{b['orders']}", str(b["statuses"])],
        [
            "completions/min (first to last)",
            _v(b["orders_per_min"]),
            f"offered {b.get('offered_per_min')}/min, open loop",
        ],
        ["submit → terminal p50 / p95 / p99 ms", _trio(b["e2e_ms"], "p50", "p95", "p99"), ""],
        ["event delivery p50 / p99 ms", _trio(b["delivery_ms"], "p50", "p99"), ""],
        ["submit p99 ms", _v(b["submit_ms"]["p99"]), ""],
    ]
    cap_rows = [
        [c["worker_concurrency"], c["processes"], c["backlog"], _v(c["orders_per_s"]),
         _v(c["steady_orders_per_s"]), _trio(c["order_ms"], "p50", "p99"),
         f"{c.get('retried', 0)} {c.get('error_codes') or ''}"]
        if "error" not in c else
        [c["worker_concurrency"], c["processes"], "failed", c["error"].splitlines()[0][:80],
         "", "", ""]
        for c in s["capacity"]
    ]  # fmt: skip
    return [
        ("2a. Realistic delays: 100 orders/min, concurrency 10, default failure rates",
         ["figure", "value", "note"], brief_rows, []),
        ("2b. Realistic delays: drain capacity (failure rates 0)",
         ["WORKER_CONCURRENCY", "processes", "backlog", "orders/s", "steady orders/s",
          "order ms p50 / p99", "retried (error codes)"], cap_rows,
         ["orders/s = backlog ÷ (first routing → last terminal event, PostgreSQL timestamps); "
          "steady = the middle 80 % of completions"]),
    ]  # fmt: skip


def _fanout(s: dict[str, Any]) -> list[Section]:
    rows = []
    for lv in s["levels"]:
        d = lv["delivery_ms"]
        ok = None
        if lv["subscribers"] >= TARGETS["subscribers"]:
            ok = lv["held"] == lv["subscribers"] and _le(d["p99"], TARGETS["delivery_p99_ms"])
        runs = lv.get("p99_runs") or []
        p99s = f" (median of runs: {', '.join(str(_v(p)) for p in runs)})" if len(runs) > 1 else ""
        rows.append([
            lv["subscribers"], _concurrency(lv), lv["held"], _v(lv["connects_per_s"]),
            _trio(d, "p50", "p99") + p99s, _v(d["max"]), f"{lv['events']}/{lv['events_expected']}",
            lv["seq_gaps"] + lv["bad_closes"], _v(lv["api_idle_cpu_pct"]),
            _v(lv["api_rss_mb_held"]), _v(lv.get("api_us_per_message")),
            _cpu_split(lv["delivering"]), _verdict(ok),
        ])  # fmt: skip
    cfg = s["config"]
    return [(
        "3. WebSocket fan-out, one API process",
        ["subscribers", "worker concurrency", "held", "connects/s", "delivery p50 / p99 ms",
         "max ms", "events", "gaps+bad closes", "API idle CPU %", "API RSS MB", "API µs/message",
         "CPU-s delivering api / clients / other", "≥5000 & p99 ≤ 100"],
        rows,
        [f"{cfg['orders']} orders per level, subscribers spread evenly; realistic delays; at "
         "worker concurrency = orders ('all') the orders start together, so every status is a "
         "burst of one message per subscriber (worst case); at a lower concurrency (the "
         "engine's default is 10) at most that many orders are in flight; 'events' counts the "
         "replayed `pending` too, and retried orders' extra events; idle CPU with every socket "
         "open and no events; µs/message = API CPU while delivering ÷ live messages"],
    )]  # fmt: skip


def _concurrency(level: dict[str, Any]) -> str:
    """The fan-out level's worker concurrency; 'all' when every order starts at once."""
    concurrency = level.get("worker_concurrency", level["orders"])
    return "all" if concurrency >= level["orders"] else str(concurrency)


def _soak(s: dict[str, Any]) -> list[Section]:
    load = s["load"]
    rows = []
    for proc in ("api", "worker"):
        g = s.get(proc) or {}
        rows.append([
            f"{proc} RSS MB", _v(g.get("from_mb")), _v(g.get("to_mb")), _v(g.get("max_mb")),
            _v(g.get("growth_pct"), " %"), _v(g.get("second_half_mb_per_min")),
        ])  # fmt: skip
    notes = [
        f"{load['completed']} orders at {load['orders_per_s']}/s; flat (≤ 10 %): "
        f"{_verdict(s.get('flat'))}; Redis grew {s.get('redis_bytes_per_order')} B per order; "
        f"measured from t={s.get('measured_from_s')} s"
    ]
    header = ["", "after warm-up", "end", "max", "growth", "2nd half MB/min"]
    return [("4. Soak, SIM_LATENCY_SCALE=0", header, rows, notes)]


def _cpu_split(d: dict[str, Any]) -> str:
    c = d["cpu_s"]
    api, clients, other = _v(c.get("api")), _v(c.get("clients")), _v(d["other_cpu_s"])
    return f"{api} / {clients} / {other} in {d['wall_s']} s"


def _r(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _triggers(s: dict[str, Any]) -> list[Section]:
    labels = {"none": "no limit orders", "few": "a few near the market",
              "loaded": "10,000 resting + a few near"}  # fmt: skip
    rows = [
        [labels.get(k, k), _v(s[k]["step_ms"]), _v(s[k]["tick_ms"]), _v(s[k]["triggers_ms"]),
         _v(s[k]["expiry_ms"])]
        for k in ("none", "few", "loaded") if k in s
    ]  # fmt: skip
    notes = [f"trigger check, loaded ÷ few: {s.get('trigger_check_ratio_loaded_vs_few')}"]
    header = ["open limit orders", "step ms", "tick ms", "trigger check ms", "expiry ms"]
    return [("5. Market loop with open limit orders (medians)", header, rows, notes)]


def _generic(name: str, s: dict[str, Any]) -> list[Section]:
    """A scenario this report has no layout for: its top-level figures as they are."""
    rows = [
        [k, json.dumps(v, default=str)[:150]]
        for k, v in s.items()
        if k not in ("seconds", "speed")  # the host speed is in the preamble
    ]
    return [(f"{name} (figures as returned)", ["figure", "value"], rows, [])]


def _ge(v: float | None, target: float) -> bool | None:
    return None if v is None else v >= target


def _le(v: float | None, target: float) -> bool | None:
    return None if v is None else v <= target


def _trio(d: dict[str, Any], *keys: str) -> str:
    return " / ".join(_v(d.get(k)) for k in keys)


def sections(results: dict[str, Any]) -> list[Section]:
    out: list[Section] = []
    sc = results["scenarios"]
    layouts = {"e2e": _e2e, "realistic": _realistic, "fanout": _fanout, "soak": _soak,
               "triggers": _triggers}  # fmt: skip
    for name, figures in sc.items():
        if "error" in figures:
            error = figures["error"]
            out.append((f"{name}: FAILED", ["error"], [[error.splitlines()[0][:150]]],
                        error.splitlines()[1:]))  # fmt: skip
        elif name in layouts:
            out += layouts[name](figures)
        else:
            out += _generic(name, figures)
    return out


def _when_and_where(results: dict[str, Any]) -> list[str]:
    """The run's mode and start, the machine, and the host's speed through the run."""
    m = results["machine"]
    return [
        f"Mode: {results['mode']}, started {results['started']}, "
        f"{results.get('seconds', '…')} s in all.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, "
        f"Linux {m['kernel']}; load average at start {m['load_avg_at_start']}.",
        _speed_line(results),
    ]


def _preamble(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        *_when_and_where(results),
        "Everything runs on this machine: PostgreSQL (fsync on, synchronous commit), Valkey "
        "(append-only, fsync every second), the API, the worker(s), and the load generators, "
        "which are separate processes using uvloop and share the same 2 cores: their CPU is "
        "counted in the tables, and CPU used by other processes on the machine is reported. "
        # Results written before the transport was recorded all used TCP loopback.
        f"The API and the workers reach PostgreSQL and Valkey over "
        f"{m.get('transport', 'TCP loopback')}.",
        "Event delivery latency is client receipt - the event's `at` (PostgreSQL "
        "clock_timestamp() as the row is written, just before commit): commit → receipt, "
        "including the publish, the hub and the socket; only events committed after the "
        "socket opened count.",
    ]


def speed_text(speed: dict[str, float] | None) -> str:
    """A host speed (`steps.speed_reference`) as "loop ms / round trip µs", "-" if missing."""
    if not speed:
        return "-"
    return f"{_v(speed['python_loop_ms'])} ms / {_v(speed['ipc_round_trip_us'])} µs"


def _speed_line(results: dict[str, Any]) -> str:
    """The host's speed through the run: every figure moves with it on a shared host."""
    m = results["machine"]
    per = "; ".join(
        f"{name} {speed_text(s.get('speed'))}" for name, s in results["scenarios"].items()
    )
    return (
        "Host speed (lower is faster): a fixed Python loop, ms / a round trip between two "
        f"processes, µs: {speed_text(m.get('speed_at_start'))} at start"
        f"{'; ' + per if per else ''}; {speed_text(m.get('speed_at_end'))} at end. Figures from "
        "runs on different hosts, or at very different host speeds, are not comparable "
        "(bench/README.md, 'Reading the figures')."
    )


def write(results: dict[str, Any], out: Path) -> None:
    """latest.json and latest.md, and a copy named after the mode (quick.* or full.*), so a
    quick run does not hide the last full one."""
    text = json.dumps(results, indent=1, default=str)
    lines = ["# Benchmark results", ""] + [f"{p}  " for p in _preamble(results)]
    for title, header, rows, notes in sections(results):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]  # fmt: skip
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        lines += [""] + [f"- {n}" for n in notes]
    markdown = "\n".join(lines) + "\n"
    for stem in ("latest", results["mode"]):
        for suffix, content in ((".json", text), (".md", markdown)):
            tmp = out / f"{stem}{suffix}.tmp"
            tmp.write_text(content)
            os.replace(tmp, out / f"{stem}{suffix}")


def show(results: dict[str, Any]) -> None:
    console = Console(width=max(Console().width, 150))
    console.print()
    for p in _preamble(results):
        console.print(p, style="dim")
    for title, header, rows, notes in sections(results):
        table = Table(title=title, title_justify="left")
        for h in header:
            table.add_column(h)
        for row in rows:
            table.add_row(*(str(c) for c in row))
        console.print(table)
        for n in notes:
            console.print(f"  {n}", style="dim")


def write_profile(results: dict[str, Any], out: Path) -> None:
    """profile.md: where the API and the worker spend their CPU in the profiled scenarios."""
    lines = [
        "# Where the CPU goes (py-spy)",
        "",
        "py-spy at 100 Hz with --nonblocking (the target is never paused); samples of a thread "
        "waiting in epoll are left out, so percentages are shares of each process's busy CPU. "
        "Time in C code (uvloop, asyncpg's protocol, hiredis, socket syscalls) is charged to "
        "the Python frame that called into it.",
        "",
        # Shares move less than absolute figures between hosts, but they move.
        *(f"{p}  " for p in _when_and_where(results)),
        "",
    ]
    e2e = results["scenarios"].get("e2e")
    if e2e:
        m = e2e["summary"]
        lines += [
            f"End to end while profiled: {m['orders_per_s_runs']} orders/s; CPU ms per order: "
            + ", ".join(f"{k} {v}" for k, v in m["cpu_ms_per_order"].items()),
            "",
        ]
    if e2e and e2e.get("pg_statements"):
        lines += [
            "## PostgreSQL statements during the e2e runs (pg_stat_statements)",
            "",
            "| calls/order | server ms/order | mean ms | statement |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {s['calls_per_order']} | {s['server_ms_per_order']} | {s['mean_ms']} | "
            f"`{s['query']}` |"
            for s in e2e["pg_statements"]
        ]
        lines += [""]
    rt = e2e.get("redis_trace") if e2e else None
    if rt:
        lines += [
            f"## Redis commands per order (MONITOR, {rt['orders']} orders one at a time)",
            "",
            rt["note"] + ".",
            "",
        ]
        for who in ("api", "worker", "lua"):
            cmds = rt[f"{who}_per_order"]
            total = round(sum(cmds.values()), 1)
            detail = ", ".join(f"{k} {v}" for k, v in cmds.items())
            lines.append(f"- {who}: {total} — {detail}")
        lines += [""]
    for scenario in results["scenarios"].values():
        for name, a in (scenario.get("profile") or {}).items():
            lines += [f"## {name} ({a['samples']} samples)", ""]
            lines += [f"**py-spy: {problem}**" for problem in a.get("problems", [])]
            for key, title in (
                ("by_activity", "Share of busy time by activity (inclusive, overlapping)"),
                ("self_by_component", "Self time by package"),
                ("by_project_frame", "Attributed to the deepest project frame (incl. callees)"),
                ("self_by_function", "Self time by function"),
                ("inclusive_by_function", "Inclusive time by function"),
            ):
                lines += [f"### {title}", "", "| % | where |", "|---|---|"]
                lines += [f"| {pct} | `{where}` |" for where, pct in a[key]]
                lines += [""]
    (out / "profile.md").write_text("\n".join(lines) + "\n")
