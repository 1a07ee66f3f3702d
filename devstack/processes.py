"""Processes and ports on this machine: what the server launchers, the supervisor, the tests and
the benchmarks share (Linux /proc where it helps; plain POSIX elsewhere)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

Log = Callable[[str], None]

HOST = "127.0.0.1"
POLL_S = 0.01
_PROC = Path("/proc")


class DevstackError(RuntimeError):
    """A local server or process could not be prepared, started or stopped; the message says why."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that the OS reported free (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def quiet(_line: str) -> None:
    """Discard a progress line."""


# --- processes --------------------------------------------------------------------------------


def stat_fields(entry: Path) -> list[str] | None:
    """Fields of a /proc process or task's stat after the command name (state, ppid, ...),
    None if unavailable."""
    try:
        text = (entry / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return text[text.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and has not exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not (_PROC / "self").exists():
        return True  # nothing here tells a zombie apart; signal 0 says the pid exists
    # A zombie has exited and released everything; it only waits for a parent (or an init that
    # may never reap it, as in some containers) to collect its status. The main thread turns
    # zombie before the other threads finish exiting, so every thread is checked.
    tasks = (_PROC / str(pid) / "task").glob("[0-9]*")
    states = [fields[0] for fields in map(stat_fields, tasks) if fields]
    return any(state not in ("Z", "X") for state in states)


def program_is(pid: int, name: str) -> bool:
    """Whether the process looks like `name`; True when the platform has no /proc to tell."""
    if not (_PROC / "self").exists():
        return True
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    words = raw.split(b"\0", 1)[0].split()
    return bool(words) and Path(os.fsdecode(words[0])).name == name


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (Linux only; empty elsewhere)."""
    found = []
    for entry in _PROC.glob("[0-9]*"):
        fields = stat_fields(entry)
        if fields is not None and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def kill_tree(pid: int, deadline: float) -> None:
    """SIGKILL a server process and its children, as a crash would, and wait until all are gone."""
    # A stopped process cannot fork, so the list of children is complete when it is read.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    victims = [pid, *children(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not any(map(pid_alive, victims)), deadline, f"process {pid} to die")


def wait_until(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Poll `condition` until it holds; raise DevstackError once `deadline` (monotonic) passes."""
    while not condition():
        if time.monotonic() >= deadline:
            raise DevstackError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` so two processes never start servers on it at once."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last lines of a log file written after byte `offset`."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def file_size(path: Path) -> int:
    """Size of a file in bytes, 0 if it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --- ports ------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind `port` on `host` now (an address, `0.0.0.0` or a name)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False
    with socket.socket(family, kind, proto) as sock:
        # Servers set SO_REUSEADDR too; without it a port in TIME_WAIT would look taken. Linux
        # still refuses the bind while any socket listens on the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True


def read_int(path: Path, line: int = 0) -> int | None:
    """The integer on `line` of a small text file, None if missing or malformed."""
    try:
        return int(path.read_text().splitlines()[line])
    except (OSError, IndexError, ValueError):
        return None


def choose_port(requested: int | None, remembered: int | None, log: Log) -> tuple[int, bool]:
    """Pick the port to start on, and whether another may be tried if it turns out to be taken."""
    if requested is not None:
        return requested, False
    if remembered is not None:
        if port_is_free(remembered):
            return remembered, True
        log(f"port {remembered} used last time is taken now; picking another")
    return free_port(), True


# --- child processes --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec function: the child is sent SIGTERM when its parent dies, even by SIGKILL.

    Why PR_SET_PDEATHSIG rather than a pipe the child watches: the kernel delivers it however
    the parent dies, it is set in the child between fork and exec (before any of the child's
    own code runs), it needs no code in the API or the worker (both already shut down
    gracefully on SIGTERM), and a busy or blocked event loop cannot miss it the way it could
    miss a pipe closing. The one window, the parent dying between fork and the prctl, is closed
    by the getppid check. The signal follows the *thread* that forked, so spawn from a thread
    that lives as long as the parent (the supervisor's main thread). Linux only; elsewhere the
    children outlive a killed parent.
    """

    # libc is loaded here, in the parent: the child only calls into it.
    libc = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def spawn(
    argv: list[str],
    env: Mapping[str, str],
    *,
    log: Path | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child in a session (and process group) of its own, so that a Ctrl-C in the
    terminal reaches only its parent, which decides how the child stops, and `signal_group`
    reaches whatever the child started. Its output is appended to `log`, or shares the
    parent's when None (a session of its own has no controlling terminal, so writing there
    never stops it with SIGTTOU, whatever `stty tostop` says).

    `die_with_parent` sends the child SIGTERM when this process dies, however it dies (see
    `_die_with_parent`); use it only from a process with no other threads, as any preexec
    function requires.
    """
    preexec = _die_with_parent(os.getpid()) if die_with_parent else None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log is not None else None
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
            preexec_fn=preexec,
        )


def signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send `signum` to the child's process group (the child and whatever it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def stop_child(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM the child's group, SIGKILL it if it has not exited within `timeout_s`; the exit
    status (negative: the signal that ended it)."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
    return wait_or_kill(proc, timeout_s)


def wait_or_kill(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Wait for a child told to stop; SIGKILL its group if it has not exited within
    `timeout_s` (a second SIGTERM would not do: some servers treat it as "exit now"). Returns
    the exit status."""
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        proc.wait()
    return proc.returncode


def describe_exit(status: int) -> str:
    """A Popen return code in words: "exited with code 1", "killed by SIGKILL"."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exited with code {status}"
