"""Sampling profiles of the API and the worker under load (py-spy), and what they say.

py-spy attaches from outside (`--nonblocking`: the target is never paused, so the run being
profiled keeps its speed) and writes collapsed stacks; idle samples (a thread waiting in
epoll) are left out, so every percentage here is a share of the process's busy CPU time.
"""

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import spawn, stop

SAMPLE_RATE_HZ = 100
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PROJECT = ("app", "shared", "worker")


def py_spy() -> str | None:
    """The py-spy binary next to this interpreter, or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@dataclass(frozen=True)
class Profiling:
    """Where profiles go, and whether py-spy also samples C frames (`--native`: uvloop,
    asyncpg's Cython protocol, hiredis). Native sampling pauses the target for each sample,
    so the profiled run is slower than an unprofiled one."""

    dir: Path
    native: bool = False

    def recorder(self, name: str, pid: int) -> "Recorder":
        return Recorder(name, pid, self.dir, self.native)


class Recorder:
    """py-spy record on one pid; each start()/stop() pair writes one collapsed-stack file."""

    def __init__(self, name: str, pid: int, out_dir: Path, native: bool = False) -> None:
        self.name, self.pid, self.native = name, pid, native
        self.paths: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._out_dir = out_dir

    def start(self) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        path = self._out_dir / f"{self.name}-{len(self.paths) + 1}.collapsed.txt"
        self.paths.append(path)
        argv = [binary, "record", "--pid", str(self.pid)]
        argv += ["--rate", str(SAMPLE_RATE_HZ), "--format", "raw", "-o", str(path)]
        # py-spy reads C stacks only while the target is paused.
        argv.append("--native" if self.native else "--nonblocking")
        self.proc = spawn(argv, {}, self._out_dir / f"py-spy-{self.name}.log", self._out_dir)

    def problems(self) -> list[str]:
        """What py-spy said when a recording it should have written is missing."""
        log = self._out_dir / f"py-spy-{self.name}.log"
        missing = [p for p in self.paths if not p.exists()]
        if not missing:
            return []
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        return [f"{len(missing)} recording(s) missing: {' / '.join(tail)}"]

    def stop(self) -> None:
        if self.proc is not None:
            # py-spy writes its output on SIGINT; SIGTERM would lose it.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                stop(self.proc)


def _frames(stack: str) -> list[tuple[str, str, str]]:
    out = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw.strip())
        if m:
            out.append((m["func"], m["file"], m["line"] or ""))
        else:
            out.append((raw.strip(), "", ""))
    return out


# With --native, py-spy cannot tell a thread blocked in the kernel from a busy one; these are
# the waits (the event loop's epoll, lock and condition waits of the thread pool) to leave out.
_IDLE_CALLERS = frozenset({"uv__io_poll", "PyThread_acquire_lock_timed"})
_IDLE_LIBC = (
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "epoll_wait",
    "sem_wait",
    "sem_clockwait",
)


def _idle(frames: list[tuple[str, str, str]]) -> bool:
    if not frames[-1][1].startswith("libc"):
        return False
    libc = [f for f, file, _ in frames if file.startswith("libc")]
    named = [f for f, file, _ in frames if not file.startswith("libc")]
    return any(f.startswith(_IDLE_LIBC) for f in libc) or (
        bool(named) and named[-1] in _IDLE_CALLERS
    )


def _component(file: str) -> str:
    """The package a frame's file belongs to (`asyncpg`, `starlette`, `shared`, `asyncio`...)."""
    if file.startswith("<"):
        return "python"
    head = file.split("/", 1)[0]
    return head.removesuffix(".py")


# Activities worth a line of their own: (label, any of these in the stack, none of these).
# They overlap (a Redis write inside a publish counts for both); each is a share of busy time.
ACTIVITIES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("asyncpg pool release (no reset query: shared/db.py)",
     ("PoolConnectionHolder.release",), ()),
    ("asyncpg pool acquire", ("Pool._acquire",), ()),
    ("PostgreSQL statements (excl. pool release)",
     ("Connection._do_execute", "Connection._execute"), ("PoolConnectionHolder.release",)),
    ("transaction BEGIN/COMMIT", ("Transaction.start", "Transaction.__aexit__"), ()),
    ("FastAPI: a sync dependency handed to the thread pool (event loop side)",
     ("run_in_threadpool",), ()),
    ("anyio thread-pool thread (GIL hand-offs; partly waiting py-spy counts as busy)",
     ("WorkerThread.run",), ()),
    ("FastAPI: solve_dependencies", ("solve_dependencies",), ()),
    ("FastAPI: response validation + serialisation", ("serialize_response",), ()),
    ("queueing a job + publishing `pending` (one Lua script)", ("enqueue (shared/jobqueue.py",),
     ()),
    ("arq: polling the queue and claiming jobs (one Lua script per poll)",
     ("Worker._poll_iteration", "QueueWorker.start_jobs"), ()),
    ("coalesced writes: transitions + publish, run starts", ("(worker/writes.py",), ()),
    ("arq: run_job bookkeeping (outside the job itself)", ("Worker.run_job",),
     ("execute_order (worker/jobs.py",)),
    ("arq: finish_job", ("Worker.finish_job", "Worker.finish_failed_job", "_finish_many"), ()),
    ("Redis: writing commands to the socket", ("send_packed_command",), ()),
    ("Redis: events.publish (PUBLISH + SADD/SREM)", ("publish_many (shared/events.py",), ()),
    ("job lease renewal", ("_keep_lease",), ()),
    ("simulated cluster (shared/sim/cluster.py)", ("(shared/sim/cluster.py",), ()),
    ("simulated market (shared/sim/market.py)", ("(shared/sim/market.py",), ()),
    ("transaction build + sign", ("build_swap_transaction",), ()),
    ("logging", ("Logger._log",), ()),
    ("WebSocket: sending (starlette + uvicorn + websockets)", ("WebSocket.send",), ()),
    ("WebSocket: permessage-deflate", ("PerMessageDeflate",), ()),
    ("asyncio.wait_for (a task per call on 3.11)", ("wait_for (asyncio/tasks.py",), ()),
    ("WebSocket handshake", ("handle_connect", "process_request"), ()),
    ("WebSocket: replay/catch-up from PostgreSQL", ("_catch_up (app/stream.py",), ()),
    ("uvicorn: parsing requests + writing responses",
     ("HttpToolsProtocol.data_received", "RequestResponseCycle.send"), ()),
    ("cyclic GC", ("gc_collect",), ()),
]  # fmt: skip


def analyse(paths: list[Path], top: int = 20) -> dict[str, Any]:
    """Self time by function and by component, and busy time attributed to project code."""
    self_fn: Counter[str] = Counter()
    self_comp: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    activity: Counter[str] = Counter()
    total = 0
    lines = [ln for p in paths if p.exists() for ln in p.read_text().splitlines()]
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = _frames(stack)
        if not frames or _idle(frames):
            continue
        total += n
        func, file, lineno = frames[-1]
        self_fn[f"{func} ({file}:{lineno})"] += n
        self_comp[_component(file)] += n
        for key in {f"{f} ({fl})" for f, fl, _ in frames}:
            incl_fn[key] += n
        # The deepest frame of our own code under which this sample ran.
        deepest = next(
            (f"{f} ({fl}:{ln})" for f, fl, ln in reversed(frames) if _component(fl) in PROJECT),
            "(outside project code)",
        )
        ours[deepest] += n
        for label, anyof, noneof in ACTIVITIES:
            if any(a in stack for a in anyof) and not any(x in stack for x in noneof):
                activity[label] += n

    def pct(counter: Counter[str], k: int) -> list[list[Any]]:
        return [[name, round(100 * n / max(total, 1), 1)] for name, n in counter.most_common(k)]

    return {
        "samples": total,
        "by_activity": pct(activity, len(ACTIVITIES)),
        "self_by_component": pct(self_comp, 15),
        "self_by_function": pct(self_fn, top),
        "inclusive_by_function": pct(incl_fn, top * 2),
        "by_project_frame": pct(ours, top),
    }
