"""Back-pressure: the rate limit (429), the queue-depth limit (503), both with Retry-After and
writing nothing; a WebSocket reader too slow for its buffer is closed with 4408 and told where to
resume, and resuming with `afterSeq` yields exactly the events it missed."""

import asyncio
import math
import re
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import websockets
from redis.asyncio import Redis

from shared import events, keys
from tests.conftest import StackFactory
from tests.helpers import follow, until_closed, wait_terminal

TIMEOUT_S = 15
SEND_TIMEOUT_S = 0.5


def _order(amount: str) -> dict[str, Any]:
    return {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": amount}


async def _count_orders(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM orders")
    return count


def _assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert body["code"] == code and body["error"], body


async def _burst_within_one_second(
    http: httpx.AsyncClient, n: int
) -> tuple[list[httpx.Response], int]:
    """Send `n` POSTs at once, all inside one wall-clock second (the limiter's window);
    returns the responses and that second. Retries if a burst straddled a boundary."""
    for _ in range(3):
        now = time.time()
        # Not waiting for an outcome: the burst starts at the top of a wall-clock second.
        await asyncio.sleep(math.ceil(now) - now + 0.01)  # sleep-ok: aligning to the second
        second = int(time.time())
        responses = await asyncio.gather(
            *(http.post("/api/orders/execute", json=_order(f"0.{i + 1}")) for i in range(n))
        )
        if int(time.time()) == second:
            return list(responses), second
    raise AssertionError("could not fit a burst of POSTs into one second")


async def test_rate_limit_429_with_retry_after_and_nothing_written(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, rate_limit_per_s=5)
    responses, second = await _burst_within_one_second(stack.http, 8)
    # A burst that straddled no boundary was counted in one window: exactly 5 pass.
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(accepted) == 5 and len(refused) == 3, [r.status_code for r in responses]
    for response in refused:
        _assert_refused(response, 429, "RATE_LIMITED")
    assert await _count_orders(db) == 5, "a refused order was written"
    ids = {uuid.UUID(r.json()["orderId"]) for r in accepted}
    stored = {r["id"] for r in await db.fetch("SELECT id FROM orders")}
    assert stored == ids

    # The limit is per second: once the window has passed, orders are accepted again.
    # Not waiting for an outcome: the limiter's window is the wall clock's second.
    await asyncio.sleep(max(second + 1 - time.time(), 0) + 0.01)  # sleep-ok: next second
    response = await stack.http.post("/api/orders/execute", json=_order("0.9"))
    assert response.status_code == 200, response.text


async def test_queue_depth_503_with_retry_after_and_nothing_written(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, max_queue_depth=3)
    first = [await stack.submit(_order(f"1.{i}")) for i in range(3)]
    for amount in ("1.7", "1.8"):
        response = await stack.http.post("/api/orders/execute", json=_order(amount))
        _assert_refused(response, 503, "SERVICE_UNAVAILABLE")
        assert "queue" in response.json()["error"]
    assert await _count_orders(db) == 3, "a refused order was written"

    # A limit, not a failure: once a worker drains the queue, orders are accepted again.
    await stack.start_worker()
    for accepted in first:
        assert (await wait_terminal(stack.http, accepted["orderId"]))["status"] == "confirmed"
    response = await stack.http.post("/api/orders/execute", json=_order("1.9"))
    assert response.status_code == 200, response.text


async def _store_events(
    db: asyncpg.Connection, order_id: str, first_seq: int, events: list[dict[str, Any]]
) -> None:
    """Append events to the order's history as a worker's transitions would."""
    oid = uuid.UUID(order_id)
    for seq, event in enumerate(events, start=first_seq):
        data = {k: v for k, v in event.items() if k not in ("orderId", "seq", "status", "at")}
        await db.execute(
            "INSERT INTO order_events (order_id, seq, status, attempt, data)"
            " VALUES ($1, $2, $3, $4, $5)",
            oid,
            seq,
            event["status"],
            event["attempt"],
            data,
        )
    last = events[-1]
    await db.execute(
        "UPDATE orders SET status = $2, last_seq = $3 WHERE id = $1",
        oid,
        last["status"],
        first_seq + len(events) - 1,
    )


def _small_buffer_socket(ws_url: str) -> socket.socket:
    """A connected TCP socket with a small, fixed receive buffer, so that a client that stops
    reading backs up into the server within a few MB (autotuning would allow up to 32 MB)."""
    parts = urlsplit(ws_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect((parts.hostname, parts.port))
    sock.setblocking(False)
    return sock


async def test_slow_reader_is_closed_4408_and_resumes_exactly(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis
) -> None:
    stack = await make_stack(workers=0, ws_buffer_events=4, ws_send_timeout_s=SEND_TIMEOUT_S)
    accepted = await stack.submit(_order("3"))
    order_id = accepted["orderId"]
    pad = "x" * 32_768
    count = 300  # ~10 MB: more than the socket buffers between server and client can hold
    events = [
        {"orderId": order_id, "seq": seq, "status": "routing", "attempt": 1, "pad": pad}
        for seq in range(2, count + 1)
    ]
    events.append({"orderId": order_id, "seq": count + 1, "status": "failed", "attempt": 1})

    # max_queue=1: the client library stops reading the socket once one frame is waiting.
    sock = _small_buffer_socket(accepted["wsUrl"])
    async with websockets.connect(
        accepted["wsUrl"], sock=sock, max_queue=1, max_size=2**20, compression=None
    ) as ws:
        async with asyncio.timeout(TIMEOUT_S):
            first = orjson.loads(await ws.recv())
        assert first["seq"] == 1  # replayed: from here on everything is live
        # Stored as the worker would (so a resume can replay them), then published live
        # while the client reads nothing. The API must stay responsive meanwhile.
        await _store_events(db, order_id, 2, events)
        for event in events:
            await redis.publish("oee:events", orjson.dumps(event))
        assert (await stack.http.get("/health")).status_code == 200
        # Not waiting for an outcome: this is the fault itself, a reader stalled for longer
        # than the server's send timeout.
        await asyncio.sleep(SEND_TIMEOUT_S * 4)  # sleep-ok: the injected stall
        received = [first, *await until_closed(ws, TIMEOUT_S)]
    assert ws.close_code == 4408, (ws.close_code, ws.close_reason, len(received))
    match = re.search(r"afterSeq=(\d+)", ws.close_reason or "")
    assert match, ws.close_reason
    resume_at = int(match.group(1))
    seqs = [e["seq"] for e in received]
    assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate before the close"
    assert len(seqs) < count + 1, "the reader was never too slow"
    assert resume_at == seqs[-1], "the close must name the last event the client was sent"

    url = f"{accepted['wsUrl']}&afterSeq={resume_at}"
    rest = await follow(url, timeout_s=TIMEOUT_S)
    assert [e["seq"] for e in rest] == list(range(resume_at + 1, count + 2))
    assert rest[-1]["status"] == "failed"
    assert all(e["pad"] == pad for e in rest[:-1])


async def test_reconnecting_after_every_event_misses_nothing(make_stack: StackFactory) -> None:
    """A client that drops after each event and resumes with afterSeq=<last seq> ends with the
    order's exact history: every event once, in order, as stored."""
    stack = await make_stack(sim_latency_scale=0.3)
    accepted = await stack.submit(_order("4"))
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT_S * 2):
        while not got or got[-1]["status"] not in ("confirmed", "failed"):
            url = accepted["wsUrl"] + (f"&afterSeq={got[-1]['seq']}" if got else "")
            async with websockets.connect(url) as ws:
                got.append(orjson.loads(await ws.recv()))
    detail = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    assert got == detail["events"]
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert got[-1]["status"] == "confirmed"


async def test_resume_mid_flight_gets_exactly_the_missed_events(
    make_stack: StackFactory,
) -> None:
    """Disconnect after `routing`, let the order move on, resume: only what was missed."""
    stack = await make_stack(sim_latency_scale=0.5)
    accepted = await stack.submit(_order("5"))
    async with websockets.connect(accepted["wsUrl"]) as ws:
        async with asyncio.timeout(TIMEOUT_S):
            seen = [orjson.loads(await ws.recv()), orjson.loads(await ws.recv())]
    assert [e["status"] for e in seen] == ["pending", "routing"]
    rest = await follow(f"{accepted['wsUrl']}&afterSeq=2", timeout_s=TIMEOUT_S)
    assert [e["status"] for e in rest] == ["building", "submitted", "confirmed"]
    assert [e["seq"] for e in rest] == [3, 4, 5]
    detail = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    assert seen + rest == detail["events"]


async def test_reader_that_never_reads_again_is_let_go(
    make_stack: StackFactory, redis: Redis
) -> None:
    """A client that stops reading for good cannot take the 4408 close frame either; the server
    must still drop it within a bounded time rather than hold its socket, handler task and
    subscription for ever (one stuck phone would otherwise pin memory in the API)."""
    stack = await make_stack(workers=0, ws_buffer_events=4, ws_send_timeout_s=SEND_TIMEOUT_S)
    accepted = await stack.submit(_order("6"))
    order_id = accepted["orderId"]
    pad = "x" * 32_768
    sock = _small_buffer_socket(accepted["wsUrl"])
    async with websockets.connect(
        accepted["wsUrl"], sock=sock, max_queue=1, max_size=2**20, compression=None
    ) as ws:
        async with asyncio.timeout(TIMEOUT_S):
            assert orjson.loads(await ws.recv())["seq"] == 1
        health = (await stack.http.get("/health")).json()
        assert health["subscribers"] == 1
        for seq in range(2, 300):
            event = {"orderId": order_id, "seq": seq, "status": "routing", "attempt": 1}
            await redis.publish("oee:events", orjson.dumps(event | {"pad": pad}))
        # The client never reads again. Within a few send timeouts the server must let go.
        deadline = time.monotonic() + SEND_TIMEOUT_S * 10
        try:
            while (await stack.http.get("/health")).json()["subscribers"] != 0:
                assert time.monotonic() < deadline, "the API still holds a reader that stopped"
                await asyncio.sleep(0.1)  # sleep-ok: polling a condition with a deadline
        finally:
            ws.transport.abort()  # no closing handshake: this client is gone


async def test_an_event_whose_publish_was_lost_still_reaches_the_socket(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    """A worker that commits and dies before it publishes: the events are only in PostgreSQL.
    The API's periodic comparison with PostgreSQL finds the socket behind and sends them."""
    stack = await make_stack(workers=0, ws_check_s=0.2)
    accepted = await stack.submit(_order("7"))
    order_id = accepted["orderId"]
    async with websockets.connect(accepted["wsUrl"]) as ws:
        async with asyncio.timeout(TIMEOUT_S):
            assert orjson.loads(await ws.recv())["seq"] == 1
        lost = [
            {"status": "routing", "attempt": 1},
            {"status": "failed", "attempt": 1, "error": "lost", "code": "INTERNAL"},
        ]
        await _store_events(db, order_id, 2, lost)  # stored, never published
        rest = await until_closed(ws, TIMEOUT_S)
    assert [(e["seq"], e["status"]) for e in rest] == [(2, "routing"), (3, "failed")]
    assert ws.close_code == 1000


async def test_a_malformed_message_on_the_events_channel_does_not_stop_the_hub(
    make_stack: StackFactory, redis: Redis
) -> None:
    """Anything can be published to a Redis channel; the one subscription every socket of the
    API depends on must skip what is not an event, even one naming a followed order."""
    stack = await make_stack(workers=0, ws_check_s=3600)  # live delivery only, no repair
    accepted = await stack.submit(_order("8"))
    async with websockets.connect(accepted["wsUrl"]) as ws:
        async with asyncio.timeout(TIMEOUT_S):
            assert orjson.loads(await ws.recv())["seq"] == 1
        for junk in (b"not json", b"[1, 2]", orjson.dumps({"orderId": accepted["orderId"]})):
            await redis.publish("oee:events", junk)
        await stack.start_worker()
        rest = await until_closed(ws, TIMEOUT_S)
    assert [e["status"] for e in rest] == ["routing", "building", "submitted", "confirmed"]
    assert ws.close_code == 1000


async def test_a_batch_of_events_is_one_message_and_each_reaches_its_socket(
    make_stack: StackFactory, redis: Redis, db: asyncpg.Connection
) -> None:
    """A worker publishes its batch of transitions as one message (a JSON array): the socket
    still gets each of its order's events, in order, and the active-orders set follows them,
    an order that starts and ends in the same batch included."""
    stack = await make_stack(workers=0, ws_check_s=3600)  # live delivery only, no repair
    accepted = await stack.submit(_order("9"))
    order_id = accepted["orderId"]
    steps = [
        {"status": "routing", "attempt": 1},
        {"status": "failed", "attempt": 1, "error": "stopped", "code": "INTERNAL"},
    ]
    born, ended = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [
        {"orderId": born, "seq": 1, "status": "pending", "attempt": 0},
        {"orderId": ended, "seq": 1, "status": "pending", "attempt": 0},
        *({"orderId": order_id, "seq": seq, **e} for seq, e in enumerate(steps, start=2)),
        {"orderId": ended, "seq": 2, "status": "cancelled", "attempt": 0},
    ]
    channel = redis.pubsub()
    await channel.subscribe(keys.EVENTS_CHANNEL)
    async with websockets.connect(accepted["wsUrl"]) as ws:
        async with asyncio.timeout(TIMEOUT_S):
            confirmation = await channel.get_message(timeout=TIMEOUT_S)
            assert confirmation is not None and confirmation["type"] == "subscribe"
            assert orjson.loads(await ws.recv())["seq"] == 1
            await _store_events(db, order_id, 2, steps)  # only the live feed can bring these
            await events.publish_many(redis, batch)
            await redis.publish(keys.EVENTS_CHANNEL, b"end")
            seen = []
            async for message in channel.listen():
                if message["data"] == b"end":
                    break
                seen.append(message["data"])
        rest = await until_closed(ws, TIMEOUT_S)
    await channel.aclose()  # type: ignore[no-untyped-call]
    assert seen == [orjson.dumps(batch)]
    assert [(e["seq"], e["status"]) for e in rest] == [(2, "routing"), (3, "failed")]
    assert ws.close_code == 1000
    assert await redis.smembers(keys.ACTIVE_ORDERS) == {born.encode()}
