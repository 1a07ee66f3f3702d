"""Pre-trade risk checks per account, over real HTTP and WebSockets: max notional (USD at the
reference price), max open orders (held under concurrency), max orders per second (429, in
place of the per-client limit), allowed tokens. A refusal is `RISK_LIMIT` naming the limit and
its value, and writes nothing."""

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

from shared import apikeys
from shared.apikeys import Scope
from shared.market.tokens import resolve_token
from tests.conftest import StackFactory
from tests.test_accounts import EXECUTE, ORDER, WAITING, assert_error, bearer, make_key

SOL_USD = resolve_token("SOL").ref_price_usd  # type: ignore[union-attr]  # a still market


async def orders_of(db: asyncpg.Connection, account: str) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM orders WHERE account = $1", account)
    return n


def risk_refusal(response: httpx.Response, status: int, limit: str) -> dict[str, Any]:
    body = assert_error(response, status, "RISK_LIMIT")
    assert [d["limit"] for d in body["details"]] == [limit], body
    return body


async def test_max_notional_in_usd_at_the_reference_price(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, auth_mode="keys", risk_max_notional_usd=Decimal(1000))
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    await apikeys.set_limits(db, "bob", {"max_notional_usd": Decimal(50_000)})  # an override
    under = Decimal(999) / SOL_USD  # just under 1000 USD of SOL
    small = {**ORDER, "amountIn": str(under.quantize(Decimal("0.001")))}
    large = {**ORDER, "amountIn": str((Decimal(1001) / SOL_USD).quantize(Decimal("0.001")))}
    assert (await stack.http.post(EXECUTE, json=small, headers=bearer(alice))).status_code == 200
    refused = await stack.http.post(EXECUTE, json=large, headers=bearer(alice))
    body = risk_refusal(refused, 403, "max_notional_usd")
    assert body["details"][0]["value"] == "1000"
    assert "USD" in body["error"]
    # the same order is within bob's own limit; ten times it is not
    assert (await stack.http.post(EXECUTE, json=large, headers=bearer(bob))).status_code == 200
    huge = {**ORDER, "amountIn": str((Decimal(60_000) / SOL_USD).quantize(Decimal(1)))}
    refused = await stack.http.post(EXECUTE, json=huge, headers=bearer(bob))
    assert risk_refusal(refused, 403, "max_notional_usd")["details"][0]["value"] == "50000"
    # valued by tokenIn: 999 USDC is under, 1001 USDC over
    usdc = {"type": "market", "tokenIn": "USDC", "tokenOut": "SOL"}
    ok = await stack.http.post(EXECUTE, json=usdc | {"amountIn": "999"}, headers=bearer(alice))
    assert ok.status_code == 200, ok.text
    over = await stack.http.post(EXECUTE, json=usdc | {"amountIn": "1001"}, headers=bearer(alice))
    risk_refusal(over, 403, "max_notional_usd")
    assert (await orders_of(db, "alice"), await orders_of(db, "bob")) == (2, 1)


async def test_allowed_tokens_from_settings_and_account(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, auth_mode="keys", risk_allowed_tokens="SOL, USDC")
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    usdt = resolve_token("USDT")
    assert usdt is not None
    await apikeys.set_limits(db, "bob", {"allowed_tokens": [usdt.mint]})
    http = stack.http
    assert (await http.post(EXECUTE, json=ORDER, headers=bearer(alice))).status_code == 200
    to_usdt = {**ORDER, "tokenOut": "USDT"}
    body = risk_refusal(await http.post(EXECUTE, json=to_usdt, headers=bearer(alice)), 403,
                        "allowed_tokens")  # fmt: skip
    assert body["details"][0]["value"] == "USDT"
    # bob may trade USDT only: SOL is refused whichever side it is on
    body = risk_refusal(await http.post(EXECUTE, json=to_usdt, headers=bearer(bob)), 403,
                        "allowed_tokens")  # fmt: skip
    assert body["details"][0]["value"] == "SOL"
    assert (await orders_of(db, "alice"), await orders_of(db, "bob")) == (1, 0)


async def test_max_open_orders_holds_under_20_parallel_posts(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, auth_mode="keys", risk_max_open_orders=5)
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    await apikeys.set_limits(db, "bob", {"max_open_orders": 3})

    async def post(key: str) -> httpx.Response:
        return await stack.http.post(EXECUTE, json=WAITING, headers=bearer(key))

    responses = await asyncio.gather(
        *(post(alice) for _ in range(20)), *(post(bob) for _ in range(20))
    )
    alice_codes = sorted(r.status_code for r in responses[:20])
    bob_codes = sorted(r.status_code for r in responses[20:])
    assert alice_codes == [200] * 5 + [403] * 15
    assert bob_codes == [200] * 3 + [403] * 17
    for response in responses:
        if response.status_code == 403:
            risk_refusal(response, 403, "max_open_orders")
    assert (await orders_of(db, "alice"), await orders_of(db, "bob")) == (5, 3)
    # A finished order frees its place.
    first = next(r.json()["orderId"] for r in responses[:20] if r.status_code == 200)
    cancelled = await stack.http.delete(f"/api/orders/{first}", headers=bearer(alice))
    assert cancelled.json()["status"] == "cancelled"
    assert (await post(alice)).status_code == 200
    risk_refusal(await post(alice), 403, "max_open_orders")


async def test_max_open_orders_with_idempotency_keys_and_the_websocket(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, auth_mode="keys", risk_max_open_orders=2)
    alice = await make_key(db, "alice")
    url = f"{stack.ws_base}{EXECUTE}"

    async def over_socket() -> tuple[dict[str, Any], int | None]:
        async with websockets.connect(url, additional_headers=bearer(alice)) as ws:
            await ws.send(orjson.dumps(WAITING))
            async with asyncio.timeout(10):
                message: dict[str, Any] = orjson.loads(await ws.recv())
                if message["type"] == "error":
                    await ws.wait_closed()
        return message, ws.close_code

    async def keyed(n: int) -> httpx.Response:
        headers = bearer(alice) | {"Idempotency-Key": f"k{n}"}
        return await stack.http.post(EXECUTE, json=WAITING, headers=headers)

    results = await asyncio.gather(
        *(over_socket() for _ in range(5)), *(keyed(n) for n in range(5))
    )
    accepted = [m for m, _ in results[:5] if m["type"] == "accepted"]
    accepted += [r.json() for r in results[5:] if r.status_code == 200]
    assert len(accepted) == 2, results
    for message, code in results[:5]:
        if message["type"] == "error":
            assert (message["code"], code) == ("RISK_LIMIT", 4400)
            assert message["details"] == [{"limit": "max_open_orders", "value": "2"}]
    assert await orders_of(db, "alice") == 2
    # refused keys were not remembered: nothing holds them
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == sum(
        1 for r in results[5:] if r.status_code == 200
    )


async def test_orders_per_second_per_account_replace_the_per_client_limit(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    # One client address: 2/s for anonymous callers, 5/s for each account with a key.
    stack = await make_stack(
        workers=0, auth_mode="open", rate_limit_per_s=2, risk_max_orders_per_s=5
    )
    alice, bob = await make_key(db, "alice"), await make_key(db, "bob")
    await apikeys.set_limits(db, "bob", {"max_orders_per_s": 0})  # 0: no limit for bob
    http = stack.http

    async def burst(headers: dict[str, str], n: int) -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                *(http.post(EXECUTE, json=ORDER, headers=headers) for _ in range(n))
            )
        )

    # A burst can straddle a second boundary; a retry in the next second then fits.
    for _ in range(3):
        alice_burst = await burst(bearer(alice), 8)
        accepted = sum(r.status_code == 200 for r in alice_burst)
        if accepted == 5:
            break
    assert accepted == 5, [r.status_code for r in alice_burst]
    for response in alice_burst:
        if response.status_code != 200:
            body = risk_refusal(response, 429, "max_orders_per_s")
            assert body["details"][0]["value"] == "5"
            assert response.headers["retry-after"] == "1"
    assert all(r.status_code == 200 for r in await burst(bearer(bob), 12))
    anonymous = await burst({}, 6)
    assert 2 <= sum(r.status_code == 200 for r in anonymous) <= 4  # two seconds at most
    refused = next(r for r in anonymous if r.status_code == 429)
    assert_error(refused, 429, "RATE_LIMITED")


async def test_limits_changed_over_http_apply_at_once(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, auth_mode="keys")
    admin = await make_key(db, "ops", Scope.ADMIN)
    alice = await make_key(db, "alice")
    http = stack.http
    assert (await http.post(EXECUTE, json=ORDER, headers=bearer(alice))).status_code == 200
    path = "/api/admin/accounts/alice/limits"
    set_to = {"maxNotionalUsd": "10", "maxOpenOrders": 10, "allowedTokens": ["SOL", "usdc"]}
    changed = await http.put(path, json=set_to, headers=bearer(admin))
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "account": "alice",
        "maxNotionalUsd": "10",
        "maxOpenOrders": 10,
        "maxOrdersPerS": None,
        "allowedTokens": ["SOL", "USDC"],
    }
    risk_refusal(await http.post(EXECUTE, json=ORDER, headers=bearer(alice)), 403,
                 "max_notional_usd")  # fmt: skip
    reset = await http.put(path, json={"maxNotionalUsd": None}, headers=bearer(admin))
    assert reset.json()["maxNotionalUsd"] is None and reset.json()["maxOpenOrders"] == 10
    assert (await http.post(EXECUTE, json=ORDER, headers=bearer(alice))).status_code == 200
    bad = await http.put(path, json={"allowedTokens": ["NOPE"]}, headers=bearer(admin))
    assert_error(bad, 400, "VALIDATION_ERROR")
    assert await orders_of(db, "alice") == 2
