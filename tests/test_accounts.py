"""Accounts and API keys over real HTTP and WebSockets, with two accounts (`alice`, `bob`).

AUTH_MODE=keys: every /api request and socket needs a key, scopes are enforced, an account sees
and touches only its own orders (another's is exactly as absent as an unknown one), and
Idempotency-Keys are an account's own. AUTH_MODE=open: the seed's clients need no key and
trade as `public`, while a key, if sent, is still checked and used. Keys are made on the test
database with `shared.apikeys.create_key`, over `/api/admin/keys`, and with the CLI.
"""

import asyncio
import os
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection

from shared import apikeys
from shared.apikeys import Scope as KeyScope
from shared.market.tokens import resolve_token
from tests.conftest import Stack, StackFactory

EXECUTE = "/api/orders/execute"
ORDER: dict[str, Any] = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
# A limit order far above the market: it waits (open, cancellable) until cancelled.
WAITING: dict[str, Any] = {**ORDER, "type": "limit", "limitPrice": "1000000"}
TIMEOUT_S = 10
ROUTER = {"X-Lane": "router"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_key(db: asyncpg.Connection, account: str, *scopes: KeyScope) -> str:
    new = await apikeys.create_key(db, account, list(scopes) or [KeyScope.TRADE])
    return new.key


def router_lane_too(app: FastAPI) -> ASGIApp:
    """Requests carrying `X-Lane: router` go through FastAPI's own routing (middleware,
    router, dependencies) instead of whatever lane the app takes for the hot path."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if (b"x-lane", b"router") in scope.get("headers", ()):
            await FastAPI.__call__(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    return serve


@pytest.fixture
async def keys_stack(make_stack: StackFactory) -> Stack:
    return await make_stack(workers=0, auth_mode="keys", serve=router_lane_too)


async def closed_with(
    url: str, headers: dict[str, str] | None = None, send: bytes | None = None
) -> tuple[int | None, str | None, list[Any]]:
    """Open a socket (sending `send` first, if given) and read until the server closes it."""
    messages: list[Any] = []
    async with asyncio.timeout(TIMEOUT_S):
        async with websockets.connect(url, additional_headers=headers) as ws:
            try:
                if send is not None:  # the server may have closed already
                    await ws.send(send)
                while True:
                    messages.append(orjson.loads(await ws.recv()))
            except websockets.ConnectionClosed:
                pass
    return ws.close_code, ws.close_reason, messages


async def first_message(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_S):
        message: dict[str, Any] = orjson.loads(await ws.recv())
    return message


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["error"] and isinstance(body["details"], list)
    return body


# -- keys mode: no key, a bad key ---------------------------------------------------------

API_ROUTES = [
    ("POST", EXECUTE),
    ("GET", "/api/orders"),
    ("GET", f"/api/orders/{uuid.UUID(int=1)}"),
    ("DELETE", f"/api/orders/{uuid.UUID(int=1)}"),
    ("POST", f"/api/orders/{uuid.UUID(int=1)}/cancel"),
    ("GET", "/api/stats"),
    ("GET", "/api/quotes?tokenIn=SOL&tokenOut=USDC&amountIn=1"),
    ("POST", "/api/sim/launches"),
    ("GET", "/api/admin/keys"),
    ("POST", "/api/admin/keys"),
    ("DELETE", "/api/admin/keys/0123456789ab"),
    ("PUT", "/api/admin/accounts/alice/limits"),
    ("POST", "/api/ws-tokens"),
]


@pytest.mark.parametrize("lane", [{}, ROUTER], ids=["as-served", "router"])
async def test_keys_mode_answers_401_on_every_api_route_without_a_key(
    keys_stack: Stack, db: asyncpg.Connection, lane: dict[str, str]
) -> None:
    for method, path in API_ROUTES:
        response = await keys_stack.http.request(method, path, json=ORDER, headers=lane)
        body = assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer", (method, path)
        assert "key" in body["error"].lower()
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    health = await keys_stack.http.get("/health")
    assert health.status_code == 200, health.text


@pytest.mark.parametrize("lane", [{}, ROUTER], ids=["as-served", "router"])
async def test_unknown_revoked_and_malformed_keys_are_401_and_never_echoed(
    keys_stack: Stack, db: asyncpg.Connection, lane: dict[str, str]
) -> None:
    alice = await make_key(db, "alice")
    revoked = await apikeys.create_key(db, "alice", [KeyScope.TRADE])
    await apikeys.revoke_key(db, revoked.id)
    key_id, _ = apikeys.parse_key(alice) or ("", "")
    forged = f"oee_{key_id}_{'A' * 43}"  # a real id with a wrong secret
    presented = [
        bearer(forged),
        {"X-API-Key": forged},
        bearer(revoked.key),
        bearer("not-a-key"),
        {"Authorization": f"Basic {alice}"},
        {"Authorization": "Bearer"},
    ]
    for headers in presented:
        response = await keys_stack.http.post(EXECUTE, json=ORDER, headers=headers | lane)
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"
        for secret in (forged, revoked.key, alice):
            assert secret not in response.text
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    # The same key, well presented, works on both headers.
    for headers in (bearer(alice), {"X-API-Key": alice}):
        accepted = await keys_stack.http.post(EXECUTE, json=ORDER, headers=headers | lane)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["account"] == "alice"


async def test_repeated_bad_keys_from_one_client_are_rate_limited(
    keys_stack: Stack, db: asyncpg.Connection
) -> None:
    alice = await make_key(db, "alice")
    statuses = []
    for n in range(25):
        response = await keys_stack.http.get("/api/orders", headers=bearer(f"oee_bad_{n}"))
        statuses.append(response.status_code)
    assert statuses[:20] == [401] * 20
    assert set(statuses[20:]) == {429}, statuses
    limited = await keys_stack.http.get("/api/orders", headers=bearer("oee_bad"))
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["retry-after"]) > 0
    # A key not yet verified by this process is not looked up either while the client is
    # limited (no probing); another client address is not affected.
    assert (await keys_stack.http.get("/api/orders", headers=bearer(alice))).status_code == 429
    await keys_stack.redis.flushdb()
    assert (await keys_stack.http.get("/api/orders", headers=bearer(alice))).status_code == 200


# -- scopes -----------------------------------------------------------------------------


async def test_read_cannot_trade_trade_cannot_administer(
    keys_stack: Stack, db: asyncpg.Connection
) -> None:
    reader = await make_key(db, "alice", KeyScope.READ)
    trader = await make_key(db, "alice", KeyScope.TRADE)
    admin = await make_key(db, "ops", KeyScope.ADMIN)
    http = keys_stack.http
    waiting = (await http.post(EXECUTE, json=WAITING, headers=bearer(trader))).json()
    order_path = f"/api/orders/{waiting['orderId']}"
    # read: reads, but neither submits nor cancels (on either lane)
    for lane in ({}, ROUTER):
        refused = await http.post(EXECUTE, json=ORDER, headers=bearer(reader) | lane)
        assert_error(refused, 403, "FORBIDDEN")
        assert "trade" in refused.json()["error"]
    assert_error(await http.delete(order_path, headers=bearer(reader)), 403, "FORBIDDEN")
    assert (await http.get(order_path, headers=bearer(reader))).status_code == 200
    assert (await http.get("/api/orders", headers=bearer(reader))).json()["count"] == 1
    assert (await http.get("/api/stats", headers=bearer(reader))).status_code == 200
    quotes = "/api/quotes?tokenIn=SOL&tokenOut=USDC&amountIn=1"
    assert (await http.get(quotes, headers=bearer(reader))).status_code == 200
    # trade: no simulation controls, no key management
    for method, path in [
        ("POST", "/api/sim/launches"),
        ("GET", "/api/admin/keys"),
        ("POST", "/api/admin/keys"),
        ("PUT", "/api/admin/accounts/alice/limits"),
    ]:
        response = await http.request(method, path, json={}, headers=bearer(trader))
        assert_error(response, 403, "FORBIDDEN")
    # admin: all of it
    launched = await http.post("/api/sim/launches", json={}, headers=bearer(admin))
    assert launched.status_code == 201, launched.text
    listed = await http.get("/api/admin/keys", headers=bearer(admin))
    assert listed.status_code == 200 and len(listed.json()["keys"]) == 3
    assert (await http.delete(order_path, headers=bearer(trader))).json()["status"] == "cancelled"
    assert await db.fetchval("SELECT count(*) FROM orders") == 1  # the refusals wrote nothing


# -- isolation -------------------------------------------------------------------------


async def test_another_accounts_order_is_exactly_an_unknown_one(
    keys_stack: Stack, db: asyncpg.Connection
) -> None:
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    http = keys_stack.http
    mine = (await http.post(EXECUTE, json=WAITING, headers=bearer(alice))).json()
    assert mine["account"] == "alice"
    unknown = str(uuid.uuid4())
    for path in ("/api/orders/{}", "/api/orders/{}/cancel"):
        method = "GET" if path.endswith("}") else "POST"
        theirs = await http.request(method, path.format(mine["orderId"]), headers=bearer(bob))
        absent = await http.request(method, path.format(unknown), headers=bearer(bob))
        assert_error(theirs, 404, "NOT_FOUND")
        assert_error(absent, 404, "NOT_FOUND")
        assert theirs.json() | {"error": ""} == absent.json() | {"error": ""}
        assert theirs.json()["error"].replace(mine["orderId"], unknown) == absent.json()["error"]
    assert_error(
        await http.delete(f"/api/orders/{mine['orderId']}", headers=bearer(bob)), 404, "NOT_FOUND"
    )
    # bob's list does not show it; alice's does, with its account
    assert (await http.get("/api/orders", headers=bearer(bob))).json()["orders"] == []
    listed = (await http.get("/api/orders", headers=bearer(alice))).json()["orders"]
    assert [(o["orderId"], o["account"]) for o in listed] == [(mine["orderId"], "alice")]
    detail = (await http.get(f"/api/orders/{mine['orderId']}", headers=bearer(alice))).json()
    assert detail["account"] == "alice" and detail["status"] == "pending"  # bob cancelled nothing
    # the WebSocket: 4404 with the same reason as an unknown id
    base = f"{keys_stack.ws_base}{EXECUTE}?orderId="
    theirs_ws = await closed_with(base + mine["orderId"], bearer(bob))
    absent_ws = await closed_with(base + unknown, bearer(bob))
    assert theirs_ws[0] == absent_ws[0] == 4404
    assert theirs_ws[1] == f"order {mine['orderId']} not found"
    assert absent_ws[1] == f"order {unknown} not found"
    assert theirs_ws[2] == absent_ws[2] == []
    # ... while its owner follows it
    async with websockets.connect(base + mine["orderId"], additional_headers=bearer(alice)) as ws:
        first = await first_message(ws)
    assert (first["orderId"], first["status"]) == (mine["orderId"], "pending")


async def test_websocket_owner_check_reads_postgres_for_orders_accepted_elsewhere(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    """Two API processes on one database: the second never saw the order accepted."""
    first = await make_stack(workers=0, auth_mode="keys")
    second = await make_stack(workers=0, auth_mode="keys")
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    mine = (await first.http.post(EXECUTE, json=WAITING, headers=bearer(alice))).json()
    url = f"{second.ws_base}{EXECUTE}?orderId={mine['orderId']}"
    code, reason, _ = await closed_with(url, bearer(bob))
    assert (code, reason) == (4404, f"order {mine['orderId']} not found")
    async with websockets.connect(url, additional_headers=bearer(alice)) as ws:
        assert (await first_message(ws))["orderId"] == mine["orderId"]


async def test_stats_are_the_callers_own_plus_global_for_admin(
    keys_stack: Stack, db: asyncpg.Connection
) -> None:
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    admin = await make_key(db, "ops", KeyScope.ADMIN)
    http = keys_stack.http
    for _ in range(2):
        await http.post(EXECUTE, json=WAITING, headers=bearer(alice))
    await http.post(EXECUTE, json=ORDER, headers=bearer(bob))
    alice_stats = (await http.get("/api/stats", headers=bearer(alice))).json()
    assert alice_stats["account"] == "alice"
    assert (alice_stats["totalOrders"], alice_stats["byStatus"]) == (2, {"pending": 2})
    assert alice_stats["activeOrders"] == 2
    assert alice_stats["queuedJobs"] == 0  # waiting limit orders are not queued jobs
    assert alice_stats["global"] is None
    bob_stats = (await http.get("/api/stats", headers=bearer(bob))).json()
    assert (bob_stats["totalOrders"], bob_stats["queuedJobs"]) == (1, 1)
    ops = (await http.get("/api/stats", headers=bearer(admin))).json()
    assert (ops["account"], ops["totalOrders"]) == ("ops", 0)
    assert ops["global"]["totalOrders"] == 3
    assert ops["global"]["byStatus"] == {"pending": 3}
    assert ops["global"]["queuedJobs"] == 1  # bob's market order, in the arq queue


async def test_idempotency_keys_are_per_account(keys_stack: Stack, db: asyncpg.Connection) -> None:
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    http = keys_stack.http
    same = {"Idempotency-Key": "shared-key-1"}
    a1 = await http.post(EXECUTE, json=ORDER, headers=bearer(alice) | same)
    b1 = await http.post(EXECUTE, json={**ORDER, "amountIn": "2"}, headers=bearer(bob) | same)
    assert a1.status_code == b1.status_code == 200, (a1.text, b1.text)
    assert a1.json()["orderId"] != b1.json()["orderId"]  # bob's key is not alice's
    a2 = await http.post(EXECUTE, json=ORDER, headers=bearer(alice) | same)
    assert a2.json() == a1.json()  # alice's retry replays her own order
    b2 = await http.post(EXECUTE, json=ORDER, headers=bearer(bob) | same)
    assert_error(b2, 422, "IDEMPOTENCY_KEY_REUSED")  # bob's key holds bob's body
    rows = await db.fetch("SELECT account, key FROM idempotency_keys ORDER BY account")
    assert [(r["account"], r["key"]) for r in rows] == [
        ("alice", "shared-key-1"),
        ("bob", "shared-key-1"),
    ]
    assert await db.fetchval("SELECT count(*) FROM orders") == 2


# -- WebSocket credentials ---------------------------------------------------------------


async def test_websocket_needs_credentials_and_the_right_scope(
    keys_stack: Stack, db: asyncpg.Connection
) -> None:
    reader = await make_key(db, "alice", KeyScope.READ)
    trader = await make_key(db, "alice", KeyScope.TRADE)
    url = f"{keys_stack.ws_base}{EXECUTE}"
    for lane in ({}, ROUTER):
        code, reason, messages = await closed_with(url, lane, orjson.dumps(ORDER))
        assert (code, messages) == (4401, []) and "API key" in str(reason)
        code, reason, _ = await closed_with(f"{url}?orderId={uuid.uuid4()}", lane)
        assert code == 4401
        code, reason, _ = await closed_with(url, bearer("oee_bad") | lane, orjson.dumps(ORDER))
        assert (code, reason) == (4401, "the API key is invalid or revoked")
        code, reason, _ = await closed_with(url, bearer(reader) | lane, orjson.dumps(ORDER))
        assert code == 4403 and "trade" in str(reason)
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    # a trade key submits over the socket, for its account
    async with websockets.connect(url, additional_headers=bearer(trader)) as ws:
        await ws.send(orjson.dumps(ORDER))
        accepted = await first_message(ws)
    assert (accepted["type"], accepted["account"]) == ("accepted", "alice")
    # a read key follows it
    follow = f"{url}?orderId={accepted['orderId']}"
    async with websockets.connect(follow, additional_headers={"X-API-Key": reader}) as ws:
        assert (await first_message(ws))["status"] == "pending"


async def test_websocket_token_is_one_use_and_stands_for_its_key(
    keys_stack: Stack, db: asyncpg.Connection
) -> None:
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    http = keys_stack.http

    async def token(key: str) -> str:
        response = await http.post("/api/ws-tokens", headers=bearer(key))
        assert response.status_code == 201, response.text
        assert response.json()["expiresInSeconds"] == 60
        value: str = response.json()["token"]
        assert key not in value
        return value

    url = f"{keys_stack.ws_base}{EXECUTE}"
    once = await token(alice)
    async with websockets.connect(f"{url}?token={once}") as ws:  # no headers: a browser
        await ws.send(orjson.dumps(WAITING))
        accepted = await first_message(ws)
    assert accepted["account"] == "alice"
    code, reason, _ = await closed_with(f"{url}?token={once}", None, orjson.dumps(ORDER))
    assert (code, reason) == (4401, "the WebSocket token is unknown, used or expired")
    code, _, _ = await closed_with(f"{url}?token=made-up", None, orjson.dumps(ORDER))
    assert code == 4401
    follow = f"{url}?orderId={accepted['orderId']}"
    code, _, _ = await closed_with(f"{follow}&token={await token(bob)}")
    assert code == 4404  # bob's token is bob: alice's order is not there for him
    async with websockets.connect(f"{follow}&token={await token(alice)}") as ws:
        assert (await first_message(ws))["orderId"] == accepted["orderId"]
    # Used tokens are gone; an unused one is kept by its hash only.
    assert await keys_stack.redis.keys("*wstoken*") == []
    spare = await token(alice)
    stored = [k.decode() for k in await keys_stack.redis.keys("*wstoken*")]
    assert len(stored) == 1 and spare not in stored[0]
    assert 0 < await keys_stack.redis.ttl(stored[0]) <= 60
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


# -- making and revoking keys --------------------------------------------------------------


async def test_admin_keys_over_http_create_list_revoke(
    keys_stack: Stack, db: asyncpg.Connection
) -> None:
    admin = await make_key(db, "ops", KeyScope.ADMIN)
    http = keys_stack.http
    created = await http.post(
        "/api/admin/keys",
        json={"account": "carol", "scopes": ["read"], "name": "dashboard"},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    new = created.json()
    assert (new["account"], new["scopes"], new["name"]) == ("carol", ["read"], "dashboard")
    assert new["key"].startswith(f"oee_{new['id']}_")
    assert (await http.get("/api/orders", headers=bearer(new["key"]))).status_code == 200
    listed = await http.get("/api/admin/keys?account=carol", headers=bearer(admin))
    assert [k["id"] for k in listed.json()["keys"]] == [new["id"]]
    assert new["key"] not in listed.text and "key" not in listed.json()["keys"][0]
    assert listed.json()["keys"][0]["lastUsedAt"] is not None
    stored = await db.fetchval("SELECT secret_hash FROM api_keys WHERE id = $1", new["id"])
    assert new["key"].split("_")[-1].encode() not in bytes(stored)
    # bad bodies are 400 and make nothing
    for bad in ({"account": "Bad Name"}, {"account": "x", "scopes": ["root"]}, {"account": 1}):
        response = await http.post("/api/admin/keys", json=bad, headers=bearer(admin))
        assert_error(response, 400, "VALIDATION_ERROR")
    # revoked: refused at once by this process
    revoked = await http.delete(f"/api/admin/keys/{new['id']}", headers=bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["revokedAt"] is not None
    assert_error(await http.get("/api/orders", headers=bearer(new["key"])), 401, "UNAUTHORIZED")
    missing = await http.delete("/api/admin/keys/ffffffffffff", headers=bearer(admin))
    assert_error(missing, 404, "NOT_FOUND")
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 2


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AUTH_MODE",)}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env | {"DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_creates_lists_and_revokes_keys(
    make_stack: StackFactory, database_url: str, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, auth_mode="keys", auth_cache_s=0)
    made = await asyncio.to_thread(
        run_cli, database_url, "keys", "create", "--account", "alice", "--scope", "read",
        "--scope", "trade", "--name", "bot 1",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    assert apikeys.parse_key(key) is not None
    accepted = await stack.http.post(EXECUTE, json=ORDER, headers=bearer(key))
    assert accepted.status_code == 200 and accepted.json()["account"] == "alice"
    listed = await asyncio.to_thread(run_cli, database_url, "keys", "list", "--account", "alice")
    assert listed.returncode == 0 and key_id in listed.stdout
    assert key not in listed.stdout and "read,trade" in listed.stdout and "active" in listed.stdout
    revoked = await asyncio.to_thread(run_cli, database_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    # AUTH_CACHE_S=0: another process's revocation holds at once
    refused = await stack.http.post(EXECUTE, json=ORDER, headers=bearer(key))
    assert_error(refused, 401, "UNAUTHORIZED")
    again = await asyncio.to_thread(run_cli, database_url, "keys", "revoke", "ffffffffffff")
    assert again.returncode == 1 and "no API key" in again.stderr
    bad = await asyncio.to_thread(
        run_cli, database_url, "keys", "create", "--account", "alice", "--scope", "root"
    )
    assert bad.returncode == 2
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 1


# -- open mode: the seed's clients, unchanged -----------------------------------------------


async def test_open_mode_needs_no_key_and_uses_one_if_sent(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=1)  # AUTH_MODE defaults to open
    http = stack.http
    anonymous = await stack.submit()
    assert anonymous["account"] == "public"
    url = f"{stack.ws_base}{EXECUTE}"
    async with websockets.connect(f"{url}?orderId={anonymous['orderId']}") as ws:
        assert (await first_message(ws))["orderId"] == anonymous["orderId"]
    async with websockets.connect(url) as ws:  # submit over the socket, no key
        await ws.send(orjson.dumps(ORDER))
        assert (await first_message(ws))["account"] == "public"
    assert (await http.get(f"/api/orders/{anonymous['orderId']}")).status_code == 200
    assert (await http.get("/api/stats")).json()["account"] == "public"
    launched = await http.post("/api/sim/launches", json={})
    assert launched.status_code == 201, launched.text  # the demo launches tokens without a key
    # A key, if sent, is checked and used: its orders are its account's, hidden from public.
    alice = await make_key(db, "alice")
    keyed = (await http.post(EXECUTE, json=WAITING, headers=bearer(alice))).json()
    assert keyed["account"] == "alice"
    assert_error(await http.get(f"/api/orders/{keyed['orderId']}"), 404, "NOT_FOUND")
    assert keyed["orderId"] not in (await http.get("/api/orders")).text
    code, _, _ = await closed_with(f"{url}?orderId={keyed['orderId']}")
    assert code == 4404
    assert_error(await http.post(EXECUTE, json=ORDER, headers=bearer("oee_x")), 401, "UNAUTHORIZED")
    code, _, _ = await closed_with(url, bearer("oee_x"), orjson.dumps(ORDER))
    assert code == 4401
    # Key management always needs an admin key.
    assert_error(await http.get("/api/admin/keys"), 401, "UNAUTHORIZED")
    assert_error(await http.get("/api/admin/keys", headers=bearer(alice)), 403, "FORBIDDEN")
    reader = await make_key(db, "alice", KeyScope.READ)
    assert_error(await http.post(EXECUTE, json=ORDER, headers=bearer(reader)), 403, "FORBIDDEN")
    rows = await db.fetch("SELECT account, count(*) AS n FROM orders GROUP BY account")
    counts = {row["account"]: row["n"] for row in rows}
    assert counts == {"public": 2, "alice": 1}
    public_stats = (await http.get("/api/stats")).json()
    assert (public_stats["account"], public_stats["totalOrders"]) == ("public", 2)


async def test_cli_sets_account_limits_that_the_api_applies(
    make_stack: StackFactory, database_url: str, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, auth_mode="keys", auth_cache_s=0)
    alice = await make_key(db, "alice")
    limited = await asyncio.to_thread(
        run_cli, database_url, "accounts", "limits", "alice", "--max-open-orders", "1",
        "--allowed-tokens", "SOL,usdc",
    )  # fmt: skip
    assert limited.returncode == 0, limited.stderr
    row = await db.fetchrow("SELECT * FROM accounts WHERE name = 'alice'")
    assert row is not None
    assert row["max_open_orders"] == 1 and row["max_notional_usd"] is None
    assert {resolve(m) for m in row["allowed_tokens"]} == {"SOL", "USDC"}
    assert (await stack.http.post(EXECUTE, json=WAITING, headers=bearer(alice))).status_code == 200
    refused = await stack.http.post(EXECUTE, json=WAITING, headers=bearer(alice))
    assert_error(refused, 403, "RISK_LIMIT")
    assert refused.json()["details"] == [{"limit": "max_open_orders", "value": "1"}]
    reset = await asyncio.to_thread(
        run_cli, database_url, "accounts", "limits", "alice", "--max-open-orders", "default"
    )
    assert reset.returncode == 0, reset.stderr
    row = await db.fetchrow("SELECT * FROM accounts WHERE name = 'alice'")
    assert row is not None
    assert row["max_open_orders"] is None and row["allowed_tokens"] is not None  # untouched
    assert (await stack.http.post(EXECUTE, json=WAITING, headers=bearer(alice))).status_code == 200
    unknown = await asyncio.to_thread(
        run_cli, database_url, "accounts", "limits", "alice", "--allowed-tokens", "NOPE"
    )
    assert unknown.returncode == 2 and "unknown token" in unknown.stderr


def resolve(mint: str) -> str:
    token = resolve_token(mint)
    assert token is not None
    return token.symbol
