"""Hostile input over real HTTP and WebSockets (issue 19, findings 1, 4 and 5): every refusal is
a 4xx `{"error", "code", "details"}` (over the socket: an error message and close 4400),
answers at once, and writes nothing; and what the OpenAPI schema calls valid is accepted."""

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import orjson
import pytest
import websockets
from redis.asyncio import Redis

from shared import keys
from tests.conftest import Stack, StackFactory
from tests.helpers import until_closed
from tests.procs import deployment
from tests.test_orders_api import EXECUTE, JSON, assert_error, assert_nothing_written

# Client-side bound on each refusal over loopback HTTP. The server's own cost is far lower (see
# test_input_grammar: < 5 ms per input, typically tens of microseconds); before the fix,
# "1e-999999" as a price answered 500 and "1e-999999999" as an amount took minutes.
ANSWER_S = 0.5
SNIPE_MINT = "11111111111111111111111111111112"  # a valid address no token uses
SYSTEM_PROGRAM = "11111111111111111111111111111111"
USDC_MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


def order(**fields: Any) -> dict[str, Any]:
    return {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"} | fields


def limit(price: Any) -> dict[str, Any]:
    return order(type="limit", limitPrice=price)


def sniper(price: Any) -> dict[str, Any]:
    return order(type="sniper", tokenOut=SNIPE_MINT, maxPrice=price)


def body(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


async def timed(request: Any) -> httpx.Response:
    started = time.perf_counter()
    response: httpx.Response = await request
    elapsed = time.perf_counter() - started
    assert elapsed < ANSWER_S, f"answered in {elapsed:.3f} s"
    return response


_V, _J = "VALIDATION_ERROR", "INVALID_JSON"
HOSTILE_ORDERS = [
    # finding 4: these answered 500
    pytest.param(body(order(clientOrderId="\u0000")), _V, "clientOrderId", id="nul-client-id"),
    pytest.param(body(order(clientOrderId="a\x1fb")), _V, "clientOrderId", id="c0-client-id"),
    pytest.param(body(order(clientOrderId="a\x85b")), _V, "clientOrderId", id="c1-client-id"),
    pytest.param(
        b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":"1","clientOrderId":"\\ud800"}',
        _V,
        "clientOrderId",
        id="lone-surrogate-client-id",
    ),
    pytest.param(body(order(tokenIn="SOL\u0000")), _V, "tokenIn", id="nul-token"),
    pytest.param(body(limit("1e-999999")), _V, "limitPrice", id="limit-price-1e-999999"),
    pytest.param(body(limit("1e999999")), _V, "limitPrice", id="limit-price-1e999999"),
    pytest.param(body(sniper("1e-999999")), _V, "maxPrice", id="max-price-1e-999999"),
    pytest.param(body(sniper("1e999999")), _V, "maxPrice", id="max-price-1e999999"),
    pytest.param(
        b'{"type":"limit","tokenIn":"SOL","tokenOut":"USDC","amountIn":1,"limitPrice":1e-999999}',
        _V,
        "limitPrice",
        id="limit-price-json-number-1e-999999",
    ),
    # finding 1, at sizes the old code survived (the full size is the subprocess test below)
    pytest.param(body(order(amountIn="1e-99999")), _V, "amountIn", id="amount-1e-99999"),
    pytest.param(
        b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":1e-99999}',
        _V,
        "amountIn",
        id="amount-json-number-1e-99999",
    ),
    pytest.param(
        b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":' + b"1" * 4000 + b"}",
        _J,
        None,
        id="amount-4000-digit-integer",
    ),
    # finding 5: lenient forms
    pytest.param(body(order(amountIn="1_000")), _V, "amountIn", id="amount-underscore"),
    pytest.param(body(order(amountIn=" 1 ")), _V, "amountIn", id="amount-spaces"),
    pytest.param(body(order(amountIn="\u0661")), _V, "amountIn", id="amount-arabic-indic"),
    pytest.param(body(order(amountIn="")), _V, "amountIn", id="amount-empty"),
    pytest.param(body(order(amountIn="000000")), _V, "amountIn", id="amount-zeros"),
    pytest.param(body(order(tokenIn=" SOL ")), _V, "tokenIn", id="token-spaces"),
    pytest.param(body(order(tokenIn="\u017fol")), _V, "tokenIn", id="token-long-s"),
    pytest.param(
        b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":"1","amountIn":"1000"}',
        _J,
        "amountIn",
        id="duplicate-key",
    ),
    pytest.param(
        body(order(type="sniper", tokenOut=SYSTEM_PROGRAM)), _V, "tokenOut", id="snipe-system"
    ),
]


@pytest.mark.parametrize(("raw", "code", "field"), HOSTILE_ORDERS)
async def test_hostile_order_is_refused_at_once_and_writes_nothing(
    make_stack: StackFactory,
    db: asyncpg.Connection,
    redis: Redis,
    raw: bytes,
    code: str,
    field: str | None,
) -> None:
    stack = await make_stack(workers=0)
    response = await timed(stack.http.post(EXECUTE, content=raw, headers=JSON))
    refused = assert_error(response, 400, code)
    if field is not None:
        assert field in {d.get("field") for d in refused["details"]}, refused
    await assert_nothing_written(db, redis)


async def test_post_without_content_type_is_415(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis
) -> None:
    stack = await make_stack(workers=0)
    request = stack.http.build_request("POST", EXECUTE, content=body(order()))
    assert "content-type" not in request.headers
    assert_error(await timed(stack.http.send(request)), 415, "UNSUPPORTED_MEDIA_TYPE")
    await assert_nothing_written(db, redis)


@pytest.mark.parametrize("key", ["", "caf\u00e9"], ids=["empty", "latin1"])
async def test_empty_or_unprintable_idempotency_key_is_400(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis, key: str
) -> None:
    """An empty key would be one key shared by every client that sends it. (Servers strip the
    spaces around a header value, so " " arrives empty too; HTTP clients refuse to send it.)"""
    stack = await make_stack(workers=0)
    headers = {b"Content-Type": b"application/json", b"Idempotency-Key": key.encode("latin-1")}
    response = await timed(stack.http.post(EXECUTE, content=body(order()), headers=headers))
    refused = assert_error(response, 400, "VALIDATION_ERROR")
    assert refused["details"][0]["field"] == "Idempotency-Key"
    await assert_nothing_written(db, redis)


async def test_the_order_schema_and_the_validation_agree(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    """The edge cases schemathesis found: what the served schema calls valid is accepted, what
    it calls invalid is refused with 400."""
    stack = await make_stack(workers=0)
    spec = (await stack.http.get("/openapi.json")).json()
    content = spec["paths"][EXECUTE]["post"]["requestBody"]["content"]["application/json"]
    validator = jsonschema_rs.validator_for(content["schema"])
    cases = [
        order(),
        order(amountIn="0.000000001"),
        order(amountIn="000123.450"),
        order(amountIn=5),
        order(amountIn=""),
        order(amountIn="000"),
        order(amountIn="0.0000000001"),
        order(tokenIn="usdc", tokenOut="sol", amountIn="0.000001"),
        order(tokenIn="USDC", tokenOut="SOL", amountIn="0.0000001"),
        order(tokenIn="BTC", tokenOut="BONK"),
        order(clientOrderId=""),
        order(clientOrderId="x" * 64),
        order(clientOrderId="x" * 65),
        order(clientOrderId="\u0007"),
        order(slippageBps=5000),
        order(slippageBps=5001),
        limit("150.25"),
        limit("0.000000000000000001"),
        limit("0.0000000000000000001"),
        order(type="limit"),
        order(type="sniper", tokenOut=SNIPE_MINT),
        order(type="sniper", tokenOut=SYSTEM_PROGRAM),
        order(type="sniper", tokenOut=USDC_MINT),
        order(expiresInSeconds=60),
    ]
    for case in cases:
        response = await stack.http.post(EXECUTE, content=body(case), headers=JSON)
        expected = 200 if validator.is_valid(case) else 400
        assert response.status_code == expected, (case, response.text)
    accepted = sum(validator.is_valid(c) for c in cases)
    assert 8 <= accepted < len(cases)  # both sides of the line were tried
    assert await db.fetchval("SELECT count(*) FROM orders") == accepted


async def test_list_cursor_pattern_is_exactly_what_is_accepted(api_stack: Stack) -> None:
    stack = api_stack
    for cursor in ("0000", "0_" + "0" * 31, "1_" + "A" * 32, "MjAyNC0wMS0wMVQ=", ""):
        response = await timed(stack.http.get("/api/orders", params={"cursor": cursor}))
        assert_error(response, 400, "VALIDATION_ERROR")
    zeros = await stack.http.get("/api/orders", params={"cursor": "0_" + "0" * 32})
    assert zeros.status_code == 200, zeros.text
    assert zeros.json()["orders"] == []  # nothing was created before 1970
    for limit_ in (" 5", "5_0", "05", "201", "0"):
        response = await stack.http.get("/api/orders", params={"limit": limit_})
        assert_error(response, 400, "VALIDATION_ERROR")


@pytest.fixture
async def api_stack(make_stack: StackFactory) -> Stack:
    return await make_stack(workers=0)


# ---------------------------------------------------------------------------------------------
# POST /api/sim/launches

LAUNCHES = "/api/sim/launches"


@pytest.mark.parametrize(
    ("launch", "status", "code", "field"),
    [
        pytest.param(
            b'{"priceSol": 1.0000000000000002e-12, "symbol": "0"}',
            400,
            _V,
            "priceSol",
            id="float-price-below-bounds",
        ),
        pytest.param(body({"priceSol": "1e-999999"}), 400, _V, "priceSol", id="price-1e-999999"),
        pytest.param(body({"priceSol": "1e999999"}), 400, _V, "priceSol", id="price-1e999999"),
        pytest.param(
            body({"liquiditySol": "1e-999999999"}), 400, _V, "liquiditySol", id="liquidity-exp"
        ),
        pytest.param(body({"liquiditySol": "10000"}), 400, _V, "liquiditySol", id="liquidity-max"),
        pytest.param(body({"mint": ""}), 400, _V, "mint", id="mint-empty"),
        pytest.param(body({"mint": SYSTEM_PROGRAM}), 400, _V, "mint", id="mint-system-program"),
        pytest.param(body({"mint": USDC_MINT}), 400, _V, "mint", id="mint-listed"),
        pytest.param(body({"mint": "2" * 32}), 400, _V, "mint", id="mint-not-32-bytes"),
        pytest.param(body({"symbol": "\u0000"}), 400, _V, "symbol", id="symbol-nul"),
        pytest.param(body({"symbol": ""}), 400, _V, "symbol", id="symbol-empty"),
        pytest.param(b'{"symbol": "A", "symbol": "B"}', 400, _J, "symbol", id="duplicate-key"),
        pytest.param(b"[]", 400, _J, "body", id="not-an-object"),
    ],
)
async def test_hostile_launch_is_refused_and_launches_nothing(
    api_stack: Stack, redis: Redis, launch: bytes, status: int, code: str, field: str
) -> None:
    response = await timed(api_stack.http.post(LAUNCHES, content=launch, headers=JSON))
    refused = assert_error(response, status, code)
    assert field in {d.get("field") for d in refused["details"]}, refused
    assert await redis.hlen(keys.LAUNCHED_TOKENS) == 0


async def test_launch_content_type_and_known_mints(api_stack: Stack, redis: Redis) -> None:
    http = api_stack.http
    typed = http.build_request("POST", LAUNCHES, content=b'{"symbol": "MOON"}')
    assert_error(await timed(http.send(typed)), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await redis.hlen(keys.LAUNCHED_TOKENS) == 0

    bare = await http.post(LAUNCHES)  # no body at all: a launch with every default
    assert bare.status_code == 201, bare.text
    mint = str(uuid.uuid4())  # not an address
    assert_error(await http.post(LAUNCHES, json={"mint": mint}), 400, _V)
    again = await http.post(LAUNCHES, json={"mint": bare.json()["mint"]})
    assert_error(again, 409, "CONFLICT")
    exact = await http.post(LAUNCHES, json={"priceSol": "0.000000001", "liquiditySol": "9999.5"})
    assert exact.status_code == 201, exact.text
    assert (exact.json()["priceSol"], exact.json()["liquiditySol"]) == ("0.000000001", "9999.5")
    assert await redis.hlen(keys.LAUNCHED_TOKENS) == 2


# ---------------------------------------------------------------------------------------------
# the WebSocket submit


@pytest.mark.parametrize(
    ("message", "code"),
    [
        pytest.param(body(order(clientOrderId="\u0000")), _V, id="nul-client-id"),
        pytest.param(body(limit("1e-999999")), _V, id="limit-price-1e-999999"),
        pytest.param(body(sniper("1e999999")), _V, id="max-price-1e999999"),
        pytest.param(body(order(amountIn="1e-99999")), _V, id="amount-1e-99999"),
        pytest.param(body(order(amountIn="1_000")), _V, id="amount-underscore"),
        pytest.param(
            b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":"1","amountIn":"2"}', _J, id="dup-key"
        ),
        pytest.param(
            b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":' + b"9" * 100 + b"}", _J, id="long-int"
        ),
        pytest.param(b"[" * 5000 + b"]" * 5000, _J, id="deep-nesting"),
    ],
)
async def test_invalid_first_message_gets_an_error_and_close_4400(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis, message: bytes, code: str
) -> None:
    stack = await make_stack(workers=0)
    async with websockets.connect(f"{stack.ws_base}{EXECUTE}") as ws:
        await ws.send(message.decode())
        messages = await until_closed(ws, ANSWER_S * 4)
        assert (ws.close_code, len(messages)) == (4400, 1), (ws.close_code, messages)
    error = messages[0]
    assert error["type"] == "error" and error["code"] == code, error
    assert isinstance(error["error"], str) and error["error"].strip()
    assert isinstance(error["details"], list)
    await assert_nothing_written(db, redis)


# ---------------------------------------------------------------------------------------------
# finding 1 at full size, against a real API process: with the old code the first request
# pinned its CPU for minutes and every other request (/health included) waited behind it.

STALL = b'{"tokenIn":"SOL","tokenOut":"USDC","amountIn":"1e-999999999"}'


async def test_a_65_byte_request_does_not_stall_the_api() -> None:
    async with deployment() as d:
        api = await d.start_api()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=2 * ANSWER_S) as http:
            post, quote, health = await asyncio.gather(
                http.post(EXECUTE, content=STALL, headers=JSON),
                http.get("/api/quotes", params=orjson.loads(STALL)),
                http.get("/health"),
            )
            assert_error(post, 400, _V)
            assert_error(quote, 400, _V)
            assert health.status_code == 200
            for _ in range(20):  # and again: each answered within the bound
                await timed(http.post(EXECUTE, content=STALL, headers=JSON))
                await timed(http.get("/api/quotes", params=orjson.loads(STALL)))
        async with websockets.connect(f"{api.ws_base}{EXECUTE}") as ws:
            await ws.send(STALL.decode())
            messages = await until_closed(ws, 2 * ANSWER_S)
            assert ws.close_code == 4400 and messages[0]["code"] == _V, (ws.close_code, messages)
