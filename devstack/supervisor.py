"""Keep the engine's processes running, as a process supervisor (systemd, runit) would.

Every child runs in a session (and process group) of its own, so a Ctrl-C in the terminal
reaches only the supervisor, which then stops the children itself (SIGTERM, then SIGKILL after
a grace period). A child that exits while the supervisor is not stopping, for any reason (a
crash, SIGKILL, SIGTERM sent to it alone, a clean exit), is started again after a backoff delay
that doubles from `backoff_start_s` up to `backoff_max_s`, and goes back to the start once the
child has stayed up `stable_s`; each exit and restart is logged. The others are left alone.
Every child gets SIGTERM if the supervisor itself dies, even by SIGKILL (`processes.spawn`).

The loop sleeps in `select` on the signal wake-up fd: SIGCHLD, SIGINT, SIGTERM and SIGHUP wake
it at once, and the timeout only covers the next restart that is due.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType

from devstack.processes import Log, describe_exit, signal_group, spawn, wait_or_kill

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_S = 30.0
# The loop's longest nap: a safety net, since signals wake it anyway.
_IDLE_WAKE_S = 1.0


@dataclass
class Child:
    """One supervised program and its restart bookkeeping."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay_s: float = BACKOFF_START_S
    due_at: float | None = None  # when a restart is due (monotonic), None while running


@dataclass
class Supervisor:
    """Starts `Child` programs with `env`, restarts them when they die, stops them on request."""

    env: Mapping[str, str]
    log: Log
    backoff_start_s: float = BACKOFF_START_S
    backoff_max_s: float = BACKOFF_MAX_S
    stable_s: float = STABLE_S
    stop_timeout_s: float = 30.0
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def add(self, name: str, argv: list[str]) -> Child:
        """Register a program; `start_all` starts it."""
        child = Child(name, argv, delay_s=self.backoff_start_s)
        self.children.append(child)
        return child

    def start_all(self) -> None:
        """Start every registered child that is not running."""
        for child in self.children:
            if child.proc is None:
                self._start(child)

    def exited(self) -> list[Child]:
        """Children whose process has exited and not been restarted yet (for start-up checks)."""
        return [c for c in self.children if c.proc is not None and c.proc.poll() is not None]

    @contextlib.contextmanager
    def signals(self) -> Iterator[socket.socket]:
        """Install the supervisor's signal handlers for the duration; yields the socket that
        receives a byte for every signal, to wait on."""
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
        previous = {signum: signal.getsignal(signum) for signum in handled}
        # SIGHUP: the terminal closed; stop as cleanly as on Ctrl-C.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_stop_signal)
        # A Python-level handler is what makes the interpreter write SIGCHLD to the wake-up fd.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        try:
            yield reader
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            reader.close()
            writer.close()

    def _on_stop_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def wait(self, wake: socket.socket, timeout_s: float) -> None:
        """Sleep until a signal arrives or `timeout_s` passes, then drain the wake-up bytes."""
        if not self.stopping:
            select.select([wake], [], [], max(timeout_s, 0.0))
        with contextlib.suppress(BlockingIOError):
            while wake.recv(256):
                pass

    def supervise(self, wake: socket.socket) -> None:
        """Restart children as they die, until SIGINT, SIGTERM or SIGHUP reaches the
        supervisor."""
        while not self.stopping:
            self.check()
            self.wait(wake, self._next_timeout_s())

    def check(self) -> None:
        """Note the children that have exited, and start those whose restart is due."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._schedule_restart(child, now)
            if child.proc is None and child.due_at is not None and now >= child.due_at:
                self._start(child)

    def _schedule_restart(self, child: Child, now: float) -> None:
        assert child.proc is not None
        up_s = now - child.started_at
        if up_s >= self.stable_s:
            child.delay_s = self.backoff_start_s
        how = describe_exit(child.proc.returncode)
        self.log(
            f"{child.name} (pid {child.proc.pid}) {how} after {up_s:.1f} s; "
            f"restarting in {child.delay_s:.2f} s"
        )
        child.proc = None
        child.due_at = now + child.delay_s
        child.delay_s = min(child.delay_s * 2, self.backoff_max_s)

    def _start(self, child: Child) -> None:
        child.proc = spawn(child.argv, self.env, die_with_parent=True)
        child.started_at = time.monotonic()
        if child.due_at is None:
            self.log(f"{child.name} started, pid {child.proc.pid}")
        else:
            child.restarts += 1
            self.log(f"{child.name} restarted, pid {child.proc.pid} (restart {child.restarts})")
        child.due_at = None

    def _next_timeout_s(self) -> float:
        due = [c.due_at for c in self.children if c.due_at is not None]
        if not due:
            return _IDLE_WAKE_S
        return min(_IDLE_WAKE_S, min(due) - time.monotonic())

    def stop_all(self) -> None:
        """SIGTERM every running child at once, then wait for each (SIGKILL past the timeout)."""
        self.stopping = True
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for child in self.children:
            if child.proc is not None:
                status = wait_or_kill(child.proc, max(0.1, deadline - time.monotonic()))
                # 0 or the SIGTERM it was sent (uvicorn re-raises it) is the normal way out.
                if child in running and status not in (0, -signal.SIGTERM):
                    self.log(f"{child.name} (pid {child.proc.pid}) {describe_exit(status)}")
                child.proc = None
            child.due_at = None
