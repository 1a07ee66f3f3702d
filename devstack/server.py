"""What the PostgreSQL and Valkey launchers share: a data directory, a port, a Unix socket folder,
and whether start() adopted a server that was already running."""

from __future__ import annotations

import os
import re
from pathlib import Path

from devstack.processes import DevstackError, Log, quiet

PORT_FILE = "devstack.port"
# Tries when a port picked automatically is taken between the check and the server's bind.
START_ATTEMPTS = 3


# sun_path is 108 bytes on Linux (104 on macOS), terminating NUL included.
_MAX_SOCKET_PATH = 103
_LONGEST_SOCKET_NAME = len("/.s.PGSQL.65535.lock")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]+")


def usable_socket_dir(socket_dir: Path) -> Path:
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


class Server:
    """What both launchers share: a data directory, a port once started, adoption."""

    name = "server"

    def __init__(
        self, data_dir: Path, port: int | None, log: Log | None, socket_dir: Path | None = None
    ) -> None:
        self._data_dir = Path(data_dir).absolute()
        self._requested_port = port
        self._port: int | None = None
        self._log = log or quiet
        self._adopted = False
        self._socket_dir = usable_socket_dir(socket_dir) if socket_dir is not None else None

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
    def started(self) -> bool:
        """Whether start() has run (the port is known), whether or not the server still runs."""
        return self._port is not None

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

    @property
    def url(self) -> str:
        """A URL for the default database over TCP; raises DevstackError before start()."""
        return self.tcp_url()

    def local_url(self, database: str | None = None) -> str:
        """A URL for `database` (the default one when None) as a client on this machine should
        reach it: through the Unix socket when the server has one, else over TCP."""
        return self.tcp_url(database) if self._socket_dir is None else self.socket_url(database)

    def tcp_url(self, database: str | None = None) -> str:
        """A URL for `database` over TCP; raises DevstackError before start()."""
        raise NotImplementedError

    def socket_url(self, database: str | None = None) -> str:
        """A URL for `database` through the Unix socket in `socket_dir`; raises DevstackError
        before start() or without one."""
        raise NotImplementedError

    def start(self, timeout_s: float = 30) -> str:
        """Make sure the server runs (adopting one already running on the data directory) and
        return its TCP URL."""
        raise NotImplementedError

    def stop(self, timeout_s: float = 30) -> None:
        """Shut the server down gracefully, whoever started it."""
        raise NotImplementedError

    def kill(self, timeout_s: float = 10) -> None:
        """SIGKILL the server, as a crash would."""
        raise NotImplementedError

    def is_running(self) -> bool:
        """Whether a server is running on this data directory."""
        return self.live_pid() is not None

    def live_pid(self) -> int | None:
        """The pid of the server running on this data directory (started by anyone), if any."""
        raise NotImplementedError
