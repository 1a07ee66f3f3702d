"""`GET /api/tokens`, `GET /api/markets`, the market stream, and the dashboard's own responses
(the page and its files, with their security headers), against a real stack."""

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import websockets

from shared.market.tokens import PAIRS, TOKENS
from tests.conftest import Stack, StackFactory


async def test_tokens_lists_every_token_and_pair(stack: Stack) -> None:
    body = (await stack.http.get("/api/tokens")).json()
    assert [t["symbol"] for t in body["tokens"]] == [t.symbol for t in TOKENS]
    sol = body["tokens"][0]
    assert sol == {"symbol": "SOL", "name": "Solana", "mint": TOKENS[0].mint, "decimals": 9}
    assert [(p["base"], p["quote"]) for p in body["pairs"]] == list(PAIRS)
    assert body["pairs"][0]["name"] == "SOL/USDC"


async def test_markets_price_both_venues_with_their_gap(stack: Stack) -> None:
    response = await stack.http.get("/api/markets")
    assert response.status_code == 200, response.text
    by_name = {m["name"]: m for m in response.json()["markets"]}
    assert set(by_name) == {f"{b}/{q}" for b, q in PAIRS}
    sol = by_name["SOL/USDC"]
    ray, met = Decimal(sol["raydium"]), Decimal(sol["meteora"])
    assert Decimal(100) < ray < Decimal(200) and Decimal(100) < met < Decimal(200), sol
    gap = abs(ray - met) * 10_000 / min(ray, met)
    assert abs(Decimal(sol["gapBps"]) - gap) < 1, sol
    assert 100 < gap < 800, sol  # the seeded venues disagree by a few percent
    assert sol["cheaper"] == ("raydium" if ray < met else "meteora")
    assert sol["history"] == []  # a still market (no ticker) has recorded nothing


async def test_markets_history_follows_the_ticker(make_stack: StackFactory) -> None:
    stack = await make_stack(sim_tick_ms=50)
    async with asyncio.timeout(20):
        while True:
            body = (await stack.http.get("/api/markets", params={"points": "3"})).json()
            history = body["markets"][0]["history"]
            if len(history) == 3:
                break
            await asyncio.sleep(0.05)  # sleep-ok: polling the recorded ticks with a deadline
    assert [p["at"] for p in history] == sorted(p["at"] for p in history)  # oldest first
    assert all(Decimal(p["raydium"]) > 0 and Decimal(p["meteora"]) > 0 for p in history)
    bad = await stack.http.get("/api/markets", params={"points": "301"})
    assert bad.status_code == 400 and bad.json()["code"] == "VALIDATION_ERROR", bad.text


async def _next_snapshot(ws: websockets.ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "markets", message
    return message


async def test_market_stream_sends_a_snapshot_then_every_change(stack: Stack) -> None:
    async with websockets.connect(f"{stack.ws_base}/api/markets/stream") as ws:
        first = await _next_snapshot(ws)
        before = {m["name"]: m for m in first["markets"]}
        # A large fill moves the pool it lands on, so the next look sees another price. Only
        # Meteora and no other token: the route's one pool is the DLMM pool the panel shows.
        order = await stack.submit(
            {
                "tokenIn": "SOL",
                "tokenOut": "USDC",
                "amountIn": "2000",
                "dexes": ["meteora"],
                "onlyDirectRoutes": True,
            }
        )
        moved = await _next_snapshot(ws)
    after = {m["name"]: m for m in moved["markets"]}
    assert after["SOL/USDC"]["meteora"] != before["SOL/USDC"]["meteora"], order
    assert after["ETH/USDC"] == before["ETH/USDC"]  # only the pair traded moved


async def test_market_stream_refuses_another_origin(stack: Stack) -> None:
    url = f"{stack.ws_base}/api/markets/stream"
    async with websockets.connect(url, origin=websockets.Origin("http://evil.test")) as ws:
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 4403


async def test_keys_mode_needs_a_key_for_market_data_but_not_for_the_page(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(auth_mode="keys")
    for path in ("/api/tokens", "/api/markets"):
        refused = await stack.http.get(path)
        assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
    async with websockets.connect(f"{stack.ws_base}/api/markets/stream") as ws:
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 4401
    assert (await stack.http.get("/")).status_code == 200


async def test_the_page_and_its_files_carry_security_headers(stack: Stack) -> None:
    for path in ("/", "/static/js/app.js", "/static/style.css"):
        response = await stack.http.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    page = await stack.http.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text.replace('<script type="module" src="/static/', "")
    js = await stack.http.get("/static/js/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    missing = await stack.http.get("/static/nope.js")
    assert missing.status_code == 404
    assert (await stack.http.get("/openapi.json")).json()["paths"].get("/") is None
