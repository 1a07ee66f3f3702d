"""Driving load-generator processes from the orchestrator, and printing progress."""

import asyncio
import atexit
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

_live: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_live):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _live.clear()


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal non-negative integers."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class LoadGen:
    """Several `python -m bench.loadgen` processes run as one load."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        self.configs = configs
        self.procs: list[asyncio.subprocess.Process] = []
        self.progress = [0] * len(configs)
        self.events = [0] * len(configs)
        self.connected: list[int | None] = [None] * len(configs)
        self.cpu_at_connected: list[float] = [0.0] * len(configs)
        self.all_connected = asyncio.Event()
        self.results: list[dict[str, Any] | None] = [None] * len(configs)
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def done(self) -> int:
        return sum(self.progress)

    async def start(self) -> None:
        for i, cfg in enumerate(self.configs):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.loadgen", orjson.dumps(cfg).decode(),
                stdout=asyncio.subprocess.PIPE, start_new_session=True, limit=2**28,
            )  # fmt: skip
            _live.add(proc.pid)
            self.procs.append(proc)
            self._readers.append(asyncio.create_task(self._read(i, proc)))

    async def _read(self, i: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            msg = orjson.loads(line)
            if "progress" in msg:
                self.progress[i], self.events[i] = msg["progress"], msg["events"]
            elif "connected" in msg:
                self.connected[i] = msg["connected"]
                self.cpu_at_connected[i] = msg.get("cpu_s", 0.0)
                if all(c is not None for c in self.connected):
                    self.all_connected.set()
            elif "result" in msg:
                self.results[i] = msg["result"]
                self.progress[i] = msg["result"]["done"]

    async def wait(self) -> list[dict[str, Any]]:
        await asyncio.gather(*self._readers)
        self.all_connected.set()  # whatever happened, nobody waits for it any more
        for proc in self.procs:
            await proc.wait()
            _live.discard(proc.pid)
        missing = [i for i, r in enumerate(self.results) if r is None]
        if missing:
            raise RuntimeError(f"load generator(s) {missing} exited without a result")
        return [r for r in self.results if r is not None]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            _live.discard(proc.pid)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples of several load generators as one: lists joined, counts added."""
    out: dict[str, Any] = {}
    for r in results:
        for k, v in r.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            elif isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = d.get(kk, 0) + vv
            elif k in ("first_send", "first_done"):
                out[k] = min(x for x in (out.get(k, 0), v, float("inf")) if x)
            elif k == "last_done":
                out[k] = max(out.get(k, 0), v)
            else:
                out[k] = out.get(k, 0) + v
    return out


def say(line: str) -> None:
    print(line, flush=True)


class Ticker:
    """Prints one progress line a second while a step runs."""

    def __init__(self, label: str, line: Callable[[float], str]) -> None:
        self.label, self.line = label, line
        self._task: asyncio.Task[None] | None = None
        self.t0 = time.monotonic()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1)
            say(f"  {self.label:<26} {time.monotonic() - self.t0:5.0f}s  {self.line(self.t0)}")

    def __enter__(self) -> "Ticker":
        self.t0 = time.monotonic()
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def rate_line(gen: LoadGen, total: int | None, what: str = "orders") -> Callable[[float], str]:
    """`done/total what, rate/s` for a Ticker, the rate over the last second."""
    last = [0, time.monotonic()]

    def line(_t0: float) -> str:
        now, done = time.monotonic(), gen.done
        rate = (done - last[0]) / max(now - last[1], 1e-9)
        last[:] = [done, now]
        of = f"/{total}" if total else ""
        return f"{done:>7}{of} {what}  {rate:7.0f}/s"

    return line
