"""The HTTP API: submitting orders (and rejecting bad ones), reading them back, stats, quotes."""

import asyncio
import base64
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from redis.asyncio import Redis
from solders.transaction import VersionedTransaction

from tests.conftest import Stack, StackFactory
from tests.helpers import wait_terminal

EXECUTE = "/api/orders/execute"
QUEUE = "oee:queue"
SEED_ORDER: dict[str, Any] = {
    "type": "market",
    "tokenIn": "SOL",
    "tokenOut": "USDC",
    "amountIn": 100,
}
SOL_MINT = "So11111111111111111111111111111111111111112"
USDC_MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
# One lamport: after the fee no pool returns anything, so it fails at once, deterministically,
# with INSUFFICIENT_LIQUIDITY. (A huge order does not: a constant-product pool always fills.)
DUST = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.000000001"}
ONE_SOL = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
JSON = {"Content-Type": "application/json"}
ORDER_FIELDS = {
    "orderId", "type", "status", "tokenIn", "tokenOut", "amountIn", "slippageBps",
    "clientOrderId", "dexChosen", "pool", "quotePrice", "executedPrice", "amountOut",
    "feeAmount", "minAmountOut", "txHash", "slot", "attempts", "lastError", "errorCode",
    "limitPrice", "expiresAt", "createdAt", "updatedAt",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# local helpers


async def count_rows(db: asyncpg.Connection) -> tuple[int, int]:
    orders = await db.fetchval("SELECT count(*) FROM orders")
    events = await db.fetchval("SELECT count(*) FROM order_events")
    return int(orders), int(events)


async def assert_nothing_written(db: asyncpg.Connection, redis: Redis) -> None:
    assert await count_rows(db) == (0, 0)
    assert await redis.zcard(QUEUE) == 0


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str) and body["error"].strip(), body
    assert body.get("code") == code, body
    assert isinstance(body.get("details"), list), body
    return body


async def post_raw(stack: Stack, content: bytes, **headers: str) -> httpx.Response:
    return await stack.http.post(EXECUTE, content=content, headers=JSON | headers)


async def wait_queue_drained(redis: Redis, timeout_s: float = 10) -> None:
    """Wait until arq has removed every job from the queue, woken by keyspace notifications.

    A job leaves the queue just after its order's terminal event is published, so "terminal"
    does not yet mean "dequeued"; this waits on the queue's own changes instead of sleeping.
    """
    db_index = int(redis.connection_pool.connection_kwargs.get("db", 0))
    await redis.config_set("notify-keyspace-events", "Kgz")
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"__keyspace@{db_index}__:{QUEUE}")
    try:
        async with asyncio.timeout(timeout_s):
            while await redis.zcard(QUEUE) > 0:
                # Returns on the next change of the queue key (or after 1 s, to re-check).
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.config_set("notify-keyspace-events", "")


async def get_stats(stack: Stack) -> dict[str, Any]:
    response = await stack.http.get("/api/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def api(make_stack: StackFactory) -> Stack:
    """The API alone (no worker): faster to start, and nothing it queues gets consumed."""
    return await make_stack(workers=0)


# ---------------------------------------------------------------------------------------------
# POST /api/orders/execute: accepted orders


async def test_seed_request_is_accepted_with_ws_url_from_host(stack: Stack) -> None:
    response = await stack.http.post(EXECUTE, json=SEED_ORDER)
    assert response.status_code == 200, response.text
    body = response.json()
    order_id = str(uuid.UUID(body["orderId"]))
    assert body["orderId"] == order_id
    assert body["status"] == "pending"
    assert body["type"] == "market"
    assert body["clientOrderId"] is None
    port = stack.base_url.rsplit(":", 1)[1]
    assert body["wsUrl"] == f"ws://127.0.0.1:{port}/api/orders/execute?orderId={order_id}"

    stored = (await stack.http.get(f"/api/orders/{order_id}")).json()
    assert (stored["tokenIn"], stored["tokenOut"], stored["amountIn"]) == ("SOL", "USDC", "100")
    assert stored["slippageBps"] == 50


async def test_an_order_is_queued_after_redis_forgot_its_scripts(api: Stack, redis: Redis) -> None:
    """After a Redis restart or SCRIPT FLUSH the enqueue script is loaded again: the order is
    queued at once, not left to the sweeper."""
    await redis.script_flush()
    response = await api.http.post(EXECUTE, json=SEED_ORDER)
    assert response.status_code == 200, response.text
    assert await redis.zscore(QUEUE, response.json()["orderId"]) is not None


async def test_ws_url_honours_a_trusted_proxys_proto_and_the_host(
    make_stack: StackFactory,
) -> None:
    """Behind a proxy in FORWARDED_ALLOW_IPS (untrusted ones: tests/test_headers.py)."""
    stack = await make_stack(workers=0, forwarded_allow_ips="127.0.0.1")
    headers = {"X-Forwarded-Proto": "https", "Host": "dex.example.com"}
    response = await stack.http.post(EXECUTE, json=SEED_ORDER, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["wsUrl"] == f"wss://dex.example.com/api/orders/execute?orderId={body['orderId']}"


@pytest.mark.parametrize(
    ("order", "token_in", "token_out", "amount", "base_units"),
    [
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5"},
            "SOL",
            "USDC",
            "1.5",
            1_500_000_000,
            id="decimal-string",
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 0.1},
            "SOL",
            "USDC",
            "0.1",
            100_000_000,
            id="json-float-kept-exact",
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.000000001"},
            "SOL",
            "USDC",
            "0.000000001",
            1,
            id="one-lamport",
        ),
        pytest.param(
            {"tokenIn": SOL_MINT, "tokenOut": USDC_MINT, "amountIn": 2},
            "SOL",
            "USDC",
            "2",
            2_000_000_000,
            id="mint-addresses",
        ),
        pytest.param(
            {"tokenIn": "usdc", "tokenOut": "sol", "amountIn": "25.25"},
            "USDC",
            "SOL",
            "25.25",
            25_250_000,
            id="lowercase-symbols",
        ),
    ],
)
async def test_accepted_order_forms(
    make_stack: StackFactory,
    db: asyncpg.Connection,
    order: dict[str, Any],
    token_in: str,
    token_out: str,
    amount: str,
    base_units: int,
) -> None:
    stack = await make_stack(workers=0)
    body = await stack.submit({"type": "market", **order})
    stored = (await stack.http.get(f"/api/orders/{body['orderId']}")).json()
    assert (stored["tokenIn"], stored["tokenOut"], stored["amountIn"]) == (
        token_in,
        token_out,
        amount,
    )
    raw = await db.fetchval(
        "SELECT amount_in FROM orders WHERE id = $1", uuid.UUID(body["orderId"])
    )
    assert int(raw) == base_units


async def test_client_order_id_is_echoed(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0)
    body = await stack.submit({**ONE_SOL, "clientOrderId": "desk-7/order-42", "slippageBps": 120})
    assert body["clientOrderId"] == "desk-7/order-42"
    stored = (await stack.http.get(f"/api/orders/{body['orderId']}")).json()
    assert stored["clientOrderId"] == "desk-7/order-42"
    assert stored["slippageBps"] == 120


# ---------------------------------------------------------------------------------------------
# POST /api/orders/execute: rejected orders write nothing


def _body(**fields: Any) -> bytes:
    order = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"} | fields
    return orjson.dumps({k: v for k, v in order.items() if v is not _DROP})


_DROP = object()
_INVALID = "INVALID_JSON"
_VALIDATION = "VALIDATION_ERROR"

INVALID_ORDERS = [
    # (raw body, expected code, field named in details or None)
    pytest.param(b"{not json", _INVALID, None, id="not-json"),
    pytest.param(b"", _INVALID, None, id="empty-body"),
    pytest.param(
        b'[{"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 1}]', _INVALID, None, id="json-array"
    ),
    pytest.param(b'"SOL"', _INVALID, None, id="json-string"),
    pytest.param(_body(tokenIn=_DROP), _VALIDATION, "tokenIn", id="missing-tokenIn"),
    pytest.param(_body(tokenOut=_DROP), _VALIDATION, "tokenOut", id="missing-tokenOut"),
    pytest.param(_body(amountIn=_DROP), _VALIDATION, "amountIn", id="missing-amountIn"),
    pytest.param(_body(tokenIn=None), _VALIDATION, "tokenIn", id="null-tokenIn"),
    pytest.param(_body(tokenIn="DOGE"), _VALIDATION, "tokenIn", id="unknown-tokenIn"),
    pytest.param(_body(tokenOut="NOPE"), _VALIDATION, "tokenOut", id="unknown-tokenOut"),
    pytest.param(
        _body(tokenIn="BTC", tokenOut="BONK", maxHops=1), _VALIDATION, "maxHops", id="no-route"
    ),
    pytest.param(
        _body(tokenIn="BTC", tokenOut="SOL", onlyDirectRoutes=True),
        _VALIDATION,
        "maxHops",
        id="no-pool-pair-direct-only",
    ),
    pytest.param(
        _body(amountIn=_DROP, amountOut="1", tokenIn="BTC", tokenOut="SOL"),
        _VALIDATION,
        "amountOut",
        id="exact-out-without-pool",
    ),
    pytest.param(_body(amountOut="1"), _VALIDATION, "amountOut", id="both-amounts"),
    pytest.param(
        _body(dexes=["raydium"], excludeDexes=["meteora"]),
        _VALIDATION,
        "excludeDexes",
        id="dexes-and-exclude",
    ),
    pytest.param(_body(dexes=["orca"]), _VALIDATION, "dexes.0", id="unknown-dex"),
    pytest.param(_body(maxSplits=4), _VALIDATION, "maxSplits", id="max-splits"),
    pytest.param(_body(tokenOut="SOL"), _VALIDATION, "tokenOut", id="same-token"),
    pytest.param(_body(tokenOut=SOL_MINT), _VALIDATION, "tokenOut", id="same-token-symbol-vs-mint"),
    pytest.param(_body(amountIn=0), _VALIDATION, "amountIn", id="amount-zero"),
    pytest.param(_body(amountIn="-1"), _VALIDATION, "amountIn", id="amount-negative"),
    pytest.param(_body(amountIn="abc"), _VALIDATION, "amountIn", id="amount-abc"),
    pytest.param(_body(amountIn=True), _VALIDATION, "amountIn", id="amount-true"),
    pytest.param(_body(amountIn="NaN"), _VALIDATION, "amountIn", id="amount-nan-string"),
    pytest.param(_body(amountIn="Infinity"), _VALIDATION, "amountIn", id="amount-inf-string"),
    pytest.param(
        b'{"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": NaN}',
        _INVALID,
        None,
        id="amount-raw-NaN",
    ),
    pytest.param(
        b'{"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 1e400}',
        _VALIDATION,
        "amountIn",
        id="amount-1e400",
    ),
    pytest.param(
        _body(tokenIn="USDC", tokenOut="SOL", amountIn="0.0000001"),
        _VALIDATION,
        "amountIn",
        id="amount-too-many-decimals-usdc",
    ),
    pytest.param(
        _body(amountIn="0.0000000001"), _VALIDATION, "amountIn", id="amount-below-one-lamport"
    ),
    pytest.param(_body(amountIn="1000000000001"), _VALIDATION, "amountIn", id="amount-over-max"),
    pytest.param(_body(slippageBps=0), _VALIDATION, "slippageBps", id="slippage-0"),
    pytest.param(_body(slippageBps=5001), _VALIDATION, "slippageBps", id="slippage-5001"),
    pytest.param(
        b'{"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 1, "slippageBps": 50.5}',
        _VALIDATION,
        "slippageBps",
        id="slippage-fraction",
    ),
    pytest.param(_body(slippageBps="50"), _VALIDATION, "slippageBps", id="slippage-string"),
    pytest.param(_body(type="stop-loss"), _VALIDATION, "type", id="unknown-type"),
    pytest.param(_body(leverage=10), _VALIDATION, "leverage", id="unknown-extra-field"),
    pytest.param(_body(limitPrice="150"), _VALIDATION, "limitPrice", id="limitPrice-on-market"),
    pytest.param(
        _body(expiresInSeconds=60), _VALIDATION, "expiresInSeconds", id="expiresInSeconds-on-market"
    ),
    pytest.param(
        _body(clientOrderId="x" * 65), _VALIDATION, "clientOrderId", id="clientOrderId-too-long"
    ),
    pytest.param(
        _body(clientOrderId=42), _VALIDATION, "clientOrderId", id="clientOrderId-not-string"
    ),
    pytest.param(
        b'{"tokenIn": "SOL\xff\xfe", "tokenOut": "USDC", "amountIn": 1}',
        _INVALID,
        None,
        id="non-utf8-bytes",
    ),
]


@pytest.mark.parametrize(("raw", "code", "field"), INVALID_ORDERS)
async def test_invalid_order_is_rejected_and_writes_nothing(
    make_stack: StackFactory,
    db: asyncpg.Connection,
    redis: Redis,
    raw: bytes,
    code: str,
    field: str | None,
) -> None:
    stack = await make_stack(workers=0)  # no worker: a wrongly queued job would stay visible
    body = assert_error(await post_raw(stack, raw), 400, code)
    if field is not None:
        assert field in {d.get("field") for d in body["details"]}, body
    await assert_nothing_written(db, redis)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_non_json_content_type_is_415(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis, content_type: str
) -> None:
    stack = await make_stack(workers=0)
    response = await stack.http.post(
        EXECUTE, content=orjson.dumps(SEED_ORDER), headers={"Content-Type": content_type}
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    await assert_nothing_written(db, redis)


def _oversized() -> bytes:
    return orjson.dumps({**ONE_SOL, "clientOrderId": "x", "pad": "x" * (17 * 1024)})


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1024):
        yield data[i : i + 1024]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_over_16_kib_is_413(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis, streamed: bool
) -> None:
    stack = await make_stack(workers=0)
    data = _oversized()
    content: bytes | AsyncIterator[bytes] = _chunks(data) if streamed else data
    response = await stack.http.post(EXECUTE, content=content, headers=JSON)
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_written(db, redis)


# ---------------------------------------------------------------------------------------------
# Idempotency-Key


async def test_idempotent_retry_returns_the_original_order(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis
) -> None:
    stack = await make_stack(workers=0)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = await stack.http.post(EXECUTE, json=ONE_SOL, headers=key)
    second = await stack.http.post(EXECUTE, json=ONE_SOL, headers=key)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert second.json()["orderId"] == first.json()["orderId"]
    assert second.json() == first.json()
    assert await count_rows(db) == (1, 1)
    assert await redis.zcard(QUEUE) == 1

    # Without the key the same body is a new order.
    third = await stack.submit(ONE_SOL)
    assert third["orderId"] != first.json()["orderId"]
    assert await count_rows(db) == (2, 2)


async def test_idempotency_key_reused_with_a_different_body_is_422(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0)
    key = {"Idempotency-Key": "same-key"}
    first = await stack.http.post(EXECUTE, json=ONE_SOL, headers=key)
    assert first.status_code == 200, first.text
    other = await stack.http.post(EXECUTE, json={**ONE_SOL, "amountIn": "2"}, headers=key)
    assert_error(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert await count_rows(db) == (1, 1)
    stored = (await stack.http.get(f"/api/orders/{first.json()['orderId']}")).json()
    assert stored["amountIn"] == "1"


async def test_concurrent_duplicates_create_exactly_one_order(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis
) -> None:
    stack = await make_stack(workers=0)
    key = {"Idempotency-Key": f"burst-{uuid.uuid4()}"}
    responses = await asyncio.gather(
        *(stack.http.post(EXECUTE, json=ONE_SOL, headers=key) for _ in range(5))
    )
    assert await count_rows(db) == (1, 1)
    assert await redis.zcard(QUEUE) == 1
    order_id = str(await db.fetchval("SELECT id FROM orders"))
    ok = [r for r in responses if r.status_code == 200]
    assert ok, [r.text for r in responses]
    for response in responses:
        if response.status_code == 200:
            assert response.json()["orderId"] == order_id
        else:
            assert_error(response, 409, "IDEMPOTENCY_IN_PROGRESS")
    # Once the first has finished, a retry of any of them gets the original answer.
    retry = await stack.http.post(EXECUTE, json=ONE_SOL, headers=key)
    assert retry.status_code == 200 and retry.json()["orderId"] == order_id


async def test_idempotency_key_over_255_chars_is_400(
    api: Stack, db: asyncpg.Connection, redis: Redis
) -> None:
    response = await api.http.post(EXECUTE, json=ONE_SOL, headers={"Idempotency-Key": "k" * 256})
    assert_error(response, 400, "VALIDATION_ERROR")
    await assert_nothing_written(db, redis)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/ld+json"])
async def test_json_content_types_are_accepted(api: Stack, content_type: str) -> None:
    response = await api.http.post(
        EXECUTE, content=orjson.dumps(ONE_SOL), headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"


# ---------------------------------------------------------------------------------------------
# GET /api/orders/{id}


async def test_pending_order_detail(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0)
    accepted = await stack.submit(ONE_SOL)
    response = await stack.http.get(f"/api/orders/{accepted['orderId']}")
    assert response.status_code == 200, response.text
    order = response.json()
    assert ORDER_FIELDS | {"signer", "signedTransaction", "events"} <= set(order)
    assert order["orderId"] == accepted["orderId"]
    assert order["status"] == "pending"
    assert order["createdAt"] and order["updatedAt"]
    assert [(e["seq"], e["status"]) for e in order["events"]] == [(1, "pending")]
    pending = order["events"][0]
    assert pending["orderId"] == accepted["orderId"]
    assert (pending["tokenIn"], pending["tokenOut"], pending["amountIn"]) == ("SOL", "USDC", "1")
    for name in (
        "dexChosen",
        "txHash",
        "executedPrice",
        "amountOut",
        "signer",
        "signedTransaction",
    ):
        assert order[name] is None, name


async def test_confirmed_order_detail_matches_its_events(stack: Stack) -> None:
    accepted = await stack.submit(SEED_ORDER)
    order = await wait_terminal(stack.http, accepted["orderId"])
    assert order["status"] == "confirmed", order
    events = order["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["status"] == "pending"
    assert [e["status"] for e in events] == [
        "pending",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    assert all(e["orderId"] == accepted["orderId"] for e in events)
    routing, submitted, confirmed = events[1], events[3], events[-1]

    assert order["dexChosen"] == confirmed["dex"] == routing["chosen"]
    assert order["dexChosen"] in {"raydium", "meteora"}
    assert order["txHash"] == confirmed["txHash"] == submitted["txHash"]
    assert Decimal(order["executedPrice"]) == Decimal(confirmed["executedPrice"]) > 0
    assert order["amountOut"] == confirmed["amountOut"]
    assert Decimal(order["amountOut"]) > 0
    assert order["feeAmount"] == confirmed["feeAmount"]
    assert order["slot"] == confirmed["slot"]
    assert order["attempts"] == 1
    # Price is tokenOut per tokenIn: 100 SOL in, amountOut USDC out.
    assert Decimal(order["amountOut"]) / Decimal(100) == pytest.approx(
        Decimal(order["executedPrice"]), rel=Decimal("1e-6")
    )

    # The stored transaction is the one that was sent: its signature is txHash, by `signer`.
    assert order["signer"] and order["signedTransaction"]
    tx = VersionedTransaction.from_bytes(base64.b64decode(order["signedTransaction"]))
    assert str(tx.signatures[0]) == order["txHash"]
    assert str(tx.message.account_keys[0]) == order["signer"]
    assert all(tx.verify_with_results())


async def test_failed_order_detail_explains_why(stack: Stack) -> None:
    accepted = await stack.submit(DUST)
    order = await wait_terminal(stack.http, accepted["orderId"])
    assert order["status"] == "failed"
    assert [e["status"] for e in order["events"]] == ["pending", "failed"]
    failed = order["events"][-1]
    assert failed["code"] == order["errorCode"] == "INSUFFICIENT_LIQUIDITY"
    assert failed["error"] == order["lastError"] and failed["error"].strip()
    assert failed["retryable"] is False
    assert failed["attempts"] == order["attempts"] == 1
    assert order["txHash"] is None and order["signedTransaction"] is None


@pytest.mark.parametrize(
    "order_id",
    [str(uuid.uuid4()), "not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"],
    ids=["random-uuid", "malformed", "number", "bad-hex"],
)
async def test_unknown_or_malformed_order_id_is_404(api: Stack, order_id: str) -> None:
    assert_error(await api.http.get(f"/api/orders/{order_id}"), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------------------------
# GET /api/orders


async def test_list_is_newest_first_and_pages_cover_every_order_once(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(workers=0)
    created = [(await stack.submit(ONE_SOL))["orderId"] for _ in range(7)]
    newest_first = list(reversed(created))

    everything = (await stack.http.get("/api/orders")).json()
    assert all(ORDER_FIELDS <= set(o) for o in everything["orders"])
    assert [o["orderId"] for o in everything["orders"]] == newest_first
    assert everything["count"] == 7 and everything["nextCursor"] is None

    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await stack.http.get("/api/orders", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["count"] == len(page["orders"])
        sizes.append(page["count"])
        seen += [o["orderId"] for o in page["orders"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == newest_first


async def test_list_filters_by_status(stack: Stack) -> None:
    confirmed = [(await stack.submit(ONE_SOL))["orderId"] for _ in range(2)]
    failed = (await stack.submit(DUST))["orderId"]
    for order_id in [*confirmed, failed]:
        await wait_terminal(stack.http, order_id)

    async def ids(status: str) -> list[str]:
        response = await stack.http.get("/api/orders", params={"status": status})
        assert response.status_code == 200, response.text
        page = response.json()
        assert all(o["status"] == status for o in page["orders"])
        return [o["orderId"] for o in page["orders"]]

    assert await ids("confirmed") == list(reversed(confirmed))
    assert await ids("failed") == [failed]
    assert await ids("pending") == []


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"status": "done"}, id="bad-status"),
        pytest.param({"limit": "0"}, id="limit-0"),
        pytest.param({"limit": "201"}, id="limit-201"),
        pytest.param({"limit": "-5"}, id="limit-negative"),
        pytest.param({"limit": "abc"}, id="limit-abc"),
        pytest.param({"cursor": "garbage"}, id="cursor-garbage"),
        pytest.param({"cursor": "!!!"}, id="cursor-not-base64"),
        pytest.param(
            {"cursor": base64.urlsafe_b64encode(b"no-separator").decode()}, id="cursor-no-separator"
        ),
        pytest.param(
            {"cursor": base64.urlsafe_b64encode(b"2024-01-01T00:00:00+00:00|x").decode()},
            id="cursor-bad-uuid",
        ),
        pytest.param(
            {"cursor": base64.urlsafe_b64encode(f"yesterday|{uuid.uuid4()}".encode()).decode()},
            id="cursor-bad-time",
        ),
        pytest.param(
            {"cursor": base64.urlsafe_b64encode(b"\xff\xfe|\xff").decode()}, id="cursor-not-utf8"
        ),
    ],
)
async def test_bad_list_parameters_are_400(api: Stack, params: dict[str, str]) -> None:
    response = await api.http.get("/api/orders", params=params)
    assert_error(response, 400, "VALIDATION_ERROR")


# ---------------------------------------------------------------------------------------------
# routes, docs


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/nope"), ("POST", "/nowhere")])
async def test_unknown_route_is_json_404(api: Stack, method: str, path: str) -> None:
    assert_error(await api.http.request(method, path), 404, "NOT_FOUND")


async def test_openapi_documents_the_execute_body(api: Stack) -> None:
    response = await api.http.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    post = spec["paths"]["/api/orders/execute"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"tokenIn", "tokenOut", "amountIn", "amountOut", "slippageBps"} <= set(
        schema["properties"]
    )
    assert {"tokenIn", "tokenOut"} <= set(schema.get("required", []))
    # Every variant requires exactly one of the two amounts.
    for variant in schema["anyOf"]:
        assert len({"amountIn", "amountOut"} & set(variant["required"])) == 1, variant
    for path in ("/api/orders", "/api/orders/{order_id}", "/api/stats", "/api/quotes", "/health"):
        assert path in spec["paths"], path

    docs = await api.http.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


# ---------------------------------------------------------------------------------------------
# GET /api/stats, /health, /api/quotes


async def test_stats_after_a_run_of_confirmed_and_failed_orders(stack: Stack, redis: Redis) -> None:
    good = [(await stack.submit(ONE_SOL))["orderId"] for _ in range(3)]
    bad = [(await stack.submit(DUST))["orderId"] for _ in range(2)]
    orders = [await wait_terminal(stack.http, order_id) for order_id in good + bad]
    assert [o["status"] for o in orders] == ["confirmed"] * 3 + ["failed"] * 2
    assert {o["errorCode"] for o in orders[3:]} == {"INSUFFICIENT_LIQUIDITY"}
    await wait_queue_drained(redis)

    stats = await get_stats(stack)
    assert stats["completedJobs"] == 3
    assert stats["failedJobs"] == 2
    assert stats["totalOrders"] == 5
    assert stats["byStatus"] == {"confirmed": 3, "failed": 2}
    assert stats["byVenue"] == dict(Counter(o["dexChosen"] for o in orders[:3]))
    assert sum(stats["byVenue"].values()) == 3
    assert stats["activeOrders"] == 0
    assert stats["queuedJobs"] == 0


async def test_stats_count_orders_failed_after_retries(
    make_stack: StackFactory, redis: Redis
) -> None:
    stack = await make_stack(sim_expiry_rate=1.0)
    order_id = (await stack.submit(ONE_SOL))["orderId"]
    order = await wait_terminal(stack.http, order_id)
    assert order["status"] == "failed"
    assert order["errorCode"] == "BLOCKHASH_EXPIRED"
    assert order["attempts"] == 3
    assert [e["attempt"] for e in order["events"] if e["status"] == "routing"] == [1, 2, 3]
    await wait_queue_drained(redis)
    stats = await get_stats(stack)
    assert (stats["completedJobs"], stats["failedJobs"], stats["totalOrders"]) == (0, 1, 1)
    assert stats["byVenue"] == {}
    assert (stats["activeOrders"], stats["queuedJobs"]) == (0, 0)


async def test_stats_count_open_orders(make_stack: StackFactory, redis: Redis) -> None:
    stack = await make_stack(workers=0)
    ids = [(await stack.submit(ONE_SOL))["orderId"] for _ in range(3)]
    stats = await get_stats(stack)
    assert stats["activeOrders"] == 3
    assert stats["queuedJobs"] == 3
    assert stats["totalOrders"] == 3
    assert stats["byStatus"] == {"pending": 3}
    assert (stats["completedJobs"], stats["failedJobs"]) == (0, 0)

    await stack.start_worker()
    for order_id in ids:
        assert (await wait_terminal(stack.http, order_id))["status"] == "confirmed"
    await wait_queue_drained(redis)
    stats = await get_stats(stack)
    assert (stats["activeOrders"], stats["queuedJobs"], stats["completedJobs"]) == (0, 0, 3)


async def test_health_reports_both_dependencies(api: Stack) -> None:
    response = await api.http.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["postgres"]["ok"] is True and body["redis"]["ok"] is True
    assert body["postgres"]["latencyMs"] >= 0 and body["redis"]["latencyMs"] >= 0


async def test_quotes_compare_both_venues(api: Stack) -> None:
    response = await api.http.get(
        "/api/quotes", params={"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tokenIn"], body["tokenOut"], body["amountIn"]) == ("SOL", "USDC", "1")
    quotes = body["quotes"]
    assert sorted(q["dex"] for q in quotes) == ["meteora", "raydium"]
    for q in quotes:
        assert q["pool"]
        assert Decimal(q["amountOut"]) > Decimal(q["minAmountOut"]) > 0
        assert Decimal(q["price"]) == pytest.approx(Decimal(q["amountOut"]), rel=Decimal("1e-6"))
        assert Decimal(q["feeAmount"]) > 0
        assert Decimal(q["priceImpactPct"]) >= 0
    best = max(quotes, key=lambda q: Decimal(q["amountOut"]))
    assert body["chosen"] == best["dex"]
    assert isinstance(body["reason"], str) and body["reason"].strip()
    # Quoting executes nothing.
    assert (await get_stats(api))["totalOrders"] == 0


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"tokenIn": "DOGE", "tokenOut": "USDC", "amountIn": "1"}, id="unknown-token"),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0"}, id="amount-zero"),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "abc"}, id="amount-abc"),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "-3"}, id="amount-neg"),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "slippageBps": "0"},
            id="slippage-0",
        ),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1e-999999999"}, id="exp"),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1_000"}, id="1_000"),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": " 1 "}, id="spaces"),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "\u0661"}, id="arabic-1"),
        pytest.param({"tokenIn": "SOL\u0000", "tokenOut": "USDC", "amountIn": "1"}, id="nul"),
        pytest.param({"tokenIn": "\u017fol", "tokenOut": "USDC", "amountIn": "1"}, id="long-s"),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "slippageBps": "5_0"},
            id="slippage-underscore",
        ),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC", "amountOut": "-1"}, id="amount-out"),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "dexes": "orca"}, id="dexes"
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "dexes": "raydium,raydium"},
            id="dexes-twice",
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "maxHops": "3"}, id="hops"
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "maxSplits": "0"}, id="splits"
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "onlyDirectRoutes": "yes"},
            id="direct-only",
        ),
    ],
)
async def test_invalid_quote_requests_are_400(api: Stack, params: dict[str, str]) -> None:
    response = await api.http.get("/api/quotes", params=params)
    assert_error(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"tokenIn": "SOL", "tokenOut": "SOL", "amountIn": "1"}, id="same-token"),
        pytest.param(
            {"tokenIn": "BTC", "tokenOut": "BONK", "amountIn": "1", "maxHops": "1"}, id="no-route"
        ),
        pytest.param(
            {"tokenIn": "BTC", "tokenOut": "SOL", "amountOut": "1"}, id="exact-out-without-pool"
        ),
        pytest.param({"tokenIn": "SOL", "tokenOut": "USDC"}, id="no-amount"),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "amountOut": "1"},
            id="both-amounts",
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
            | {"dexes": "raydium", "excludeDexes": "raydium"},
            id="no-venue-left",
        ),
        pytest.param(
            {"tokenIn": "USDC", "tokenOut": "SOL", "amountIn": "0.0000001"}, id="finer-than-usdc"
        ),
        pytest.param(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.000000001"},
            id="no-venue-can-fill",
        ),
    ],
)
async def test_well_formed_quotes_the_market_cannot_serve_are_422(
    api: Stack, params: dict[str, str]
) -> None:
    """Each parameter is valid on its own (the OpenAPI schema cannot relate them): 422."""
    response = await api.http.get("/api/quotes", params=params)
    assert_error(response, 422, "NO_ROUTE")
