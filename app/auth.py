"""Who is calling: API keys on HTTP and WebSocket, the two AUTH_MODEs, scopes.

`AUTH_MODE=open`: a request without a key is the `public` account's, with every scope but key
management; a key, if sent, is checked and used. `AUTH_MODE=keys`: every `/api` request needs a
key (`Authorization: Bearer <key>` or `X-API-Key: <key>`). Browsers cannot set headers on a
WebSocket, so a key holder asks `POST /api/ws-tokens` for a token (one use, 60 s) and opens the
socket with `?token=`; a long-lived key never goes in a URL.

A verified key is remembered for `AUTH_CACHE_S` (a revoked key stops working within that time),
so a busy client costs one PostgreSQL round trip per key per period, not per request. Clients
that keep presenting bad keys get 429 before any lookup.
"""

import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass, field

import asyncpg
import orjson
from arq.connections import ArqRedis
from starlette.requests import HTTPConnection

from app.outages import Dependency
from shared import apikeys, keys
from shared.apikeys import PUBLIC_ACCOUNT, Caller, Scope
from shared.errors import Forbidden, RateLimited, ServiceUnavailable, Unauthorized

WS_TOKEN_TTL_S = 60
BAD_KEYS_PER_MIN = 20
_CACHE_MAX = 10_000
ANONYMOUS = Caller(PUBLIC_ACCOUNT, frozenset({Scope.READ, Scope.TRADE}), None)
# AUTH_MODE=open keeps the simulation's controls open to anonymous callers (the demo drives
# token launches); key management always needs an admin key.
ANONYMOUS_SIM = Caller(PUBLIC_ACCOUNT, frozenset({Scope.ADMIN}), None)


@dataclass
class Authenticator:
    """Turns a request's credentials into a `Caller` (see the module doc)."""

    mode: str  # "open" | "keys"
    pg: Dependency[asyncpg.Pool]
    redis: Dependency[ArqRedis]
    cache_s: float
    _cache: dict[bytes, tuple[float, Caller]] = field(default_factory=dict)

    async def from_headers(self, conn: HTTPConnection, sim: bool = False) -> Caller:
        presented = _presented_key(conn)
        if presented is None:
            if self.mode == "open":
                return ANONYMOUS_SIM if sim else ANONYMOUS
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
        return await self.verify(presented, _client(conn))

    async def from_websocket(self, conn: HTTPConnection) -> Caller:
        """A socket's caller: its `?token=` (redeemed, once), else its headers."""
        token = conn.query_params.get("token")
        if token is None:
            return await self.from_headers(conn)
        raw = await self.redis.run(lambda r: r.getdel(keys.ws_token_key(_token_id(token))))
        if raw is None:
            raise Unauthorized("the WebSocket token is unknown, used or expired")
        data = orjson.loads(raw)
        return Caller(data["account"], frozenset(Scope(s) for s in data["scopes"]), data["keyId"])

    async def issue_ws_token(self, caller: Caller) -> str:
        token = secrets.token_urlsafe(24)
        data = orjson.dumps(
            {"account": caller.account, "scopes": sorted(caller.scopes), "keyId": caller.key_id}
        )
        key = keys.ws_token_key(_token_id(token))
        await self.redis.run(lambda r: r.set(key, data, ex=WS_TOKEN_TTL_S))
        return token

    async def verify(self, presented: str, client: str) -> Caller:
        digest = hashlib.sha256(presented.encode()).digest()
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        failures_key = keys.auth_failures_key(client)
        # The bad-key limiter is best effort: a Redis outage must not stop reads, which need
        # only PostgreSQL (and the key lookup below still refuses a bad key).
        with contextlib.suppress(ServiceUnavailable):
            failures = await self.redis.run(lambda r: r.get(failures_key))
            if failures is not None and int(failures) >= BAD_KEYS_PER_MIN:
                raise RateLimited("too many invalid API keys from this client; wait a minute", 60)
        caller = await self._look_up(presented)
        if caller is None:
            with contextlib.suppress(ServiceUnavailable):
                await self.redis.run(lambda r: _count_failure(r, failures_key))
            raise Unauthorized("the API key is invalid or revoked")
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_s, caller)
        return caller

    def forget(self, key_id: str) -> None:
        """Stop trusting a key this process remembers (it was just revoked here; other
        processes stop within AUTH_CACHE_S)."""
        for digest, (_, caller) in list(self._cache.items()):
            if caller.key_id == key_id:
                del self._cache[digest]

    async def _look_up(self, presented: str) -> Caller | None:
        parsed = apikeys.parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed

        async def use(db: asyncpg.Pool) -> tuple[str, list[str]] | None:
            async with db.acquire() as conn:
                return await apikeys.use_key(conn, key_id, secret)

        found = await self.pg.run(use)
        if found is None:
            return None
        account, scopes = found
        return Caller(account, frozenset(Scope(s) for s in scopes), key_id)


def require(caller: Caller, needed: Scope) -> Caller:
    """The caller, if it may do what needs `needed`: else 403 (or 401 for the anonymous
    caller of AUTH_MODE=open, who can present a key that may)."""
    if not caller.can(needed):
        if caller.key_id is None:
            raise Unauthorized(f"this needs an API key with the {needed.value!r} scope")
        raise Forbidden(f"this API key lacks the {needed.value!r} scope")
    return caller


def _presented_key(conn: HTTPConnection) -> str | None:
    # One pass over the raw headers (ASGI servers lower-case their names): every order
    # comes through here, and with no key this is all AUTH_MODE=open costs it.
    authorization: bytes | None = None
    api_key: bytes | None = None
    for name, value in conn.scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"x-api-key":
            api_key = value
    if authorization is not None:
        scheme, _, key = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Authorization must be 'Bearer <key>'")
        return key.strip()
    return api_key.decode("latin-1") if api_key else None  # an empty header is no key


def _client(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def _token_id(token: str) -> str:
    """Tokens are kept by their hash: a Redis dump does not hold live credentials."""
    return hashlib.sha256(token.encode()).hexdigest()


async def _count_failure(redis: ArqRedis, key: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 60, nx=True)
        await pipe.execute()
