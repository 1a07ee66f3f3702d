"""Request-scoped access to the resources the lifespan created, and what a request may claim
about where it came from (the public URL, its WebSocket `Origin`)."""

import re
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends
from starlette.requests import HTTPConnection

from app.admission import Admission
from app.auth import Authenticator
from app.hub import EventHub
from app.outages import Dependency
from app.owners import RecentOwners
from app.risk import RiskChecks
from shared.metrics import ApiMetrics
from shared.settings import Settings
from shared.sim.market import Market

# A Host header we put in a URL: a DNS name or IPv4 address, or a bracketed IPv6 one, and an
# optional port. Anything else (a path, a query, spaces) never reaches a URL we hand out.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class Origins:
    """Where clients reach us from: the base of every `wsUrl`, and which web pages (by their
    `Origin`) may open our WebSocket.

    Nothing here reads `X-Forwarded-*`: the server applies `X-Forwarded-Proto` and
    `X-Forwarded-For` to the connection's scheme and client only when the peer is a trusted
    proxy (`FORWARDED_ALLOW_IPS`), and a proxy that rewrites `Host` is configured with
    `PUBLIC_URL` instead.
    """

    __slots__ = ("_allowed", "_any", "_public_origin", "_public_ws")

    def __init__(self, public_url: str, allowed_origins: str) -> None:
        self._public_ws: str | None = None
        self._public_origin: str | None = None
        if public_url:
            url = urlsplit(public_url)
            secure = url.scheme in ("https", "wss")
            path = url.path.rstrip("/")
            self._public_ws = f"{'wss' if secure else 'ws'}://{url.netloc}{path}"
            self._public_origin = f"{'https' if secure else 'http'}://{url.netloc}".lower()
        listed = {o.strip().rstrip("/").lower() for o in allowed_origins.split(",") if o.strip()}
        self._any = "*" in listed
        self._allowed = frozenset(listed - {"*"})

    def ws_base(self, conn: HTTPConnection) -> str:
        """`ws://host` or `wss://host`: `PUBLIC_URL`'s, else as this connection reached us."""
        if self._public_ws is not None:
            return self._public_ws
        return f"{'wss' if _secure(conn) else 'ws'}://{_own_host(conn)}"

    def allows(self, conn: HTTPConnection) -> bool:
        """Whether the page that opened this WebSocket may use it: no `Origin` (not a browser),
        the same origin (`PUBLIC_URL`'s when set, else this connection's own), or a listed one."""
        origin = conn.headers.get("origin")
        if origin is None or self._any:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self._allowed:
            return True
        if self._public_origin is not None:
            return origin == self._public_origin
        return origin == f"{'https' if _secure(conn) else 'http'}://{_own_host(conn)}".lower()


# POST an order here, and open its WebSocket here too (the same path, as the seed has it).
EXECUTE_PATH = "/api/orders/execute"


@dataclass(slots=True)
class Resources:
    settings: Settings
    db: asyncpg.Pool
    redis: ArqRedis
    hub: EventHub
    market: Market
    admission: Admission
    signer: str
    # The same servers behind a deadline and a breaker (`app.outages`): what requests use.
    pg_guard: Dependency[asyncpg.Pool]
    redis_guard: Dependency[ArqRedis]
    # Accounts and keys: who is calling, what their account may trade, who owns what.
    auth: Authenticator
    risk: RiskChecks
    owners: RecentOwners
    metrics: ApiMetrics
    origins: Origins = field(init=False)

    def __post_init__(self) -> None:
        self.origins = Origins(self.settings.public_url, self.settings.allowed_origins)


async def get_resources(conn: HTTPConnection) -> Resources:
    # async on purpose: FastAPI runs a plain `def` dependency in a thread pool, per request.
    res: Resources = conn.app.state.resources
    return res


Res = Annotated[Resources, Depends(get_resources)]


def _secure(conn: HTTPConnection) -> bool:
    return conn.scope.get("scheme") in ("https", "wss")


def _own_host(conn: HTTPConnection) -> str:
    """The request's `Host`, if it is one, else the address the server listens on."""
    host = conn.headers.get("host", "")
    if _HOST.fullmatch(host):
        return host
    server = conn.scope.get("server")
    if server is None or server[1] is None:
        return "localhost"
    name, port = server
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def ws_base(conn: HTTPConnection) -> str:
    """The base of the `wsUrl` handed to the client behind `conn` (see `Origins.ws_base`)."""
    res: Resources = conn.app.state.resources
    return res.origins.ws_base(conn)
