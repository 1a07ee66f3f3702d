"""The order WebSocket: live events, replay, resume, submit-over-socket, fan-out."""

import asyncio
import gc
import logging
import uuid
import weakref
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
import websockets
from redis.asyncio import Redis
from solders.signature import Signature
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.wsserver import PreparedFrameProtocol, UpgradingHttpProtocol
from tests.conftest import Stack, StackFactory
from tests.helpers import TERMINAL, follow, until_closed, wait_terminal

ONE_SOL: dict[str, Any] = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]
QUOTE_FIELDS = {"dex", "pool", "amountOut", "price", "feeAmount", "priceImpactPct", "minAmountOut"}
TIMEOUT_S = 10


def order_url(stack: Stack, order_id: str, after_seq: int | None = None) -> str:
    url = f"{stack.ws_base}/api/orders/execute?orderId={quote(order_id, safe='')}"
    return url if after_seq is None else f"{url}&afterSeq={after_seq}"


def submit_url(stack: Stack) -> str:
    return f"{stack.ws_base}/api/orders/execute"


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_S):
        message: dict[str, Any] = orjson.loads(await ws.recv())
    return message


async def rest_of(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every message until the server closes; the close must be the normal 1000."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for message in ws:
            events.append(orjson.loads(message))
    assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
    return events


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None, list[Any]]:
    """Read until the server closes; returns (close code, reason, messages received)."""
    messages = await until_closed(ws, TIMEOUT_S)
    return ws.close_code, ws.close_reason, messages


async def assert_nothing_written(db: asyncpg.Connection, redis: Redis) -> None:
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert await db.fetchval("SELECT count(*) FROM order_events") == 0
    assert await redis.zcard("oee:queue") == 0


def parse_at(event: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(event["at"])
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0, event["at"]  # type: ignore[union-attr]
    return at


# ---------------------------------------------------------------------------------------------
# live stream


async def test_live_events_arrive_in_order_with_their_details(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0)  # the worker starts once the socket is listening
    accepted = await stack.submit(ONE_SOL)
    order_id = accepted["orderId"]
    async with websockets.connect(accepted["wsUrl"]) as ws:
        pending = await next_event(ws)
        await stack.start_worker()
        events = [pending, *await rest_of(ws)]
    assert ws.close_code == 1000

    assert [e["status"] for e in events] == LIFECYCLE
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["orderId"] == order_id for e in events)
    ats = [parse_at(e) for e in events]
    assert ats == sorted(ats)
    assert [e["attempt"] for e in events] == [0, 1, 1, 1, 1]
    pending, routing, building, submitted, confirmed = events

    assert pending["type"] == "market"
    assert (pending["tokenIn"], pending["tokenOut"], pending["amountIn"]) == ("SOL", "USDC", "1")
    assert pending["slippageBps"] == 50

    quotes = routing["quotes"]
    assert sorted(q["dex"] for q in quotes) == ["meteora", "raydium"]
    for q in quotes:
        assert QUOTE_FIELDS <= set(q), q
        assert Decimal(q["amountOut"]) > Decimal(q["minAmountOut"]) > 0
        # minAmountOut = amountOut * (1 - 50 bps), to the token's precision
        expected_min = Decimal(q["amountOut"]) * Decimal("0.995")
        assert abs(Decimal(q["minAmountOut"]) - expected_min) <= Decimal("0.000001")
        assert Decimal(q["feeAmount"]) > 0 and Decimal(q["priceImpactPct"]) >= 0
    best = max(quotes, key=lambda q: Decimal(q["amountOut"]))
    assert routing["bestSingle"] == best
    # The route returns at least the best single pool; its venue is its largest first leg's.
    assert Decimal(routing["amountOut"]) >= Decimal(best["amountOut"])
    assert Decimal(routing["improvementBps"]) >= 0
    main = max(
        (leg for leg in routing["routePlan"] if leg["tokenIn"] == "SOL"),
        key=lambda leg: Decimal(leg["amountIn"]),
    )
    assert routing["chosen"] == main["dex"]
    assert isinstance(routing["reason"], str) and routing["reason"].strip()
    expected_min = Decimal(routing["amountOut"]) * Decimal("0.995")
    assert abs(Decimal(routing["minAmountOut"]) - expected_min) <= Decimal("0.000001")

    assert building["dex"] == routing["chosen"]
    assert building["pool"] == main["pool"]
    assert building["minAmountOut"] == routing["minAmountOut"]
    assert isinstance(building["computeUnitPrice"], int) and building["computeUnitPrice"] > 0
    assert (
        isinstance(building["lastValidBlockHeight"], int) and building["lastValidBlockHeight"] > 0
    )
    assert building["wrapSol"] is True
    assert building["unwrapSol"] is False

    Signature.from_string(submitted["txHash"])  # a base58 64-byte signature
    assert isinstance(submitted["slot"], int) and submitted["slot"] > 0

    assert confirmed["txHash"] == submitted["txHash"]
    assert confirmed["dex"] == routing["chosen"]
    assert Decimal(confirmed["amountOut"]) >= Decimal(building["minAmountOut"])
    assert Decimal(confirmed["executedPrice"]) == pytest.approx(
        Decimal(confirmed["amountOut"]), rel=Decimal("1e-6")
    )  # 1 SOL in, so the price is the output
    assert Decimal(confirmed["feeAmount"]) > 0
    assert isinstance(confirmed["slot"], int) and confirmed["slot"] >= submitted["slot"]
    assert isinstance(confirmed["latencyMs"], int) and confirmed["latencyMs"] >= 0


async def test_usdc_to_sol_unwraps_instead_of_wrapping(stack: Stack) -> None:
    accepted = await stack.submit({**ONE_SOL, "tokenIn": "USDC", "tokenOut": "SOL", "amountIn": 50})
    events = await follow(accepted["wsUrl"], TIMEOUT_S)
    building = next(e for e in events if e["status"] == "building")
    assert (building["wrapSol"], building["unwrapSol"]) == (False, True)
    assert events[-1]["status"] == "confirmed"


# ---------------------------------------------------------------------------------------------
# replay and resume


# Replay comes from the API's memory of recent orders (WS_REPLAY_ORDERS) when it saw the order
# from its first event, else from PostgreSQL: every replay test runs both ways.
REPLAY_FROM = {"memory": 2048, "postgres": 0}


@pytest.fixture(params=list(REPLAY_FROM))
def replay_orders(request: pytest.FixtureRequest) -> int:
    return REPLAY_FROM[request.param]


@pytest.fixture
async def replay_stack(make_stack: StackFactory, replay_orders: int) -> Stack:
    return await make_stack(ws_replay_orders=replay_orders)


async def test_late_subscriber_gets_the_full_history(replay_stack: Stack) -> None:
    stack = replay_stack
    accepted = await stack.submit(ONE_SOL)
    order = await wait_terminal(stack.http, accepted["orderId"], TIMEOUT_S)
    assert order["status"] == "confirmed"
    replay = await follow(accepted["wsUrl"], TIMEOUT_S)  # asserts the close is 1000
    assert replay == order["events"]
    assert [e["status"] for e in replay] == LIFECYCLE


@pytest.mark.parametrize("after_seq", [0, 2, 4])
async def test_resume_after_seq_sends_only_later_events(
    replay_stack: Stack, after_seq: int
) -> None:
    stack = replay_stack
    accepted = await stack.submit(ONE_SOL)
    order = await wait_terminal(stack.http, accepted["orderId"], TIMEOUT_S)
    resumed = await follow(order_url(stack, accepted["orderId"], after_seq), TIMEOUT_S)
    assert [e["seq"] for e in resumed] == list(range(after_seq + 1, 6))
    assert resumed == order["events"][after_seq:]


async def test_resume_after_the_terminal_event_closes_at_once(replay_stack: Stack) -> None:
    """A client that saw everything and reconnects with afterSeq=<last> is told it is over."""
    stack = replay_stack
    accepted = await stack.submit(ONE_SOL)
    order = await wait_terminal(stack.http, accepted["orderId"], TIMEOUT_S)
    last = order["events"][-1]["seq"]
    async with websockets.connect(order_url(stack, accepted["orderId"], last)) as ws:
        try:
            code, reason, messages = await asyncio.wait_for(closed_with(ws), 3)
        except TimeoutError:
            pytest.fail("the socket stayed open after replaying nothing for a finished order")
    assert messages == []
    assert code == 1000, (code, reason)


async def test_resume_mid_flight_has_no_gap_and_no_duplicate(
    make_stack: StackFactory, replay_orders: int
) -> None:
    stack = await make_stack(workers=0, ws_replay_orders=replay_orders)
    accepted = await stack.submit(ONE_SOL)
    async with websockets.connect(accepted["wsUrl"]) as first:
        seen = [await next_event(first)]
    # The client dropped after seq 1; the order runs while it is away.
    await stack.start_worker()
    async with websockets.connect(order_url(stack, accepted["orderId"], seen[-1]["seq"])) as ws:
        rest = await rest_of(ws)
    events = seen + rest
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    order = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    assert events == order["events"]


async def test_a_socket_opened_after_its_post_replays_without_reading_postgresql(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0)
    accepted = await stack.submit(ONE_SOL)
    # Take the stored history away: only the API's memory can still replay `pending`.
    await db.execute("DELETE FROM order_events WHERE order_id = $1", uuid.UUID(accepted["orderId"]))
    async with websockets.connect(accepted["wsUrl"]) as ws:
        pending = await next_event(ws)
    assert (pending["orderId"], pending["seq"], pending["status"]) == (
        accepted["orderId"],
        1,
        "pending",
    )
    assert Decimal(pending["amountIn"]) == Decimal(ONE_SOL["amountIn"])


# ---------------------------------------------------------------------------------------------
# unknown orders


@pytest.mark.parametrize(
    "order_id",
    [str(uuid.uuid4()), "not-a-uuid", "", "1' OR '1'='1"],
    ids=["random-uuid", "malformed", "empty", "injection"],
)
async def test_unknown_order_closes_4404(stack: Stack, order_id: str) -> None:
    async with websockets.connect(order_url(stack, order_id)) as ws:
        code, reason, messages = await closed_with(ws)
    assert code == 4404, (code, reason)
    assert reason
    assert messages == []


# ---------------------------------------------------------------------------------------------
# submit over the socket


async def test_submit_over_the_socket_then_follow_it(stack: Stack) -> None:
    async with websockets.connect(submit_url(stack)) as ws:
        await ws.send(orjson.dumps(ONE_SOL).decode())
        accepted = await next_event(ws)
        events = await rest_of(ws)
    assert accepted["type"] == "accepted"
    order_id = str(uuid.UUID(accepted["orderId"]))
    assert accepted["wsUrl"].endswith(f"/api/orders/execute?orderId={order_id}")
    assert [e["status"] for e in events] == LIFECYCLE
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["orderId"] == order_id for e in events)

    response = await stack.http.get(f"/api/orders/{order_id}")
    assert response.status_code == 200
    order = response.json()
    assert order["status"] == "confirmed"
    assert order["events"] == events


@pytest.mark.parametrize(
    ("message", "code"),
    [
        pytest.param(
            '{"tokenIn": "SOL", "tokenOut": "USDC"}', "VALIDATION_ERROR", id="missing-amount"
        ),
        pytest.param(
            '{"tokenIn": "DOGE", "tokenOut": "USDC", "amountIn": 1}',
            "VALIDATION_ERROR",
            id="unknown-token",
        ),
        pytest.param(
            '{"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 0}',
            "VALIDATION_ERROR",
            id="amount-zero",
        ),
        pytest.param("{not json", "INVALID_JSON", id="not-json"),
        pytest.param('["SOL", "USDC", 1]', "INVALID_JSON", id="json-array"),
    ],
)
async def test_invalid_order_over_the_socket_is_refused(
    make_stack: StackFactory, db: asyncpg.Connection, redis: Redis, message: str, code: str
) -> None:
    stack = await make_stack(workers=0)
    async with websockets.connect(submit_url(stack)) as ws:
        await ws.send(message)
        close_code, reason, messages = await closed_with(ws)
    assert close_code == 4400, (close_code, reason)
    assert len(messages) == 1, messages
    error = messages[0]
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["error"], str) and error["error"].strip()
    assert isinstance(error["details"], list)
    await assert_nothing_written(db, redis)


async def test_order_sent_as_a_binary_frame_is_answered(make_stack: StackFactory) -> None:
    """A client library may send the JSON order as a binary frame: the server must answer it
    (accept it, or refuse it with an error and 4400), never crash the connection."""
    stack = await make_stack(workers=0)
    async with websockets.connect(submit_url(stack)) as ws:
        await ws.send(orjson.dumps(ONE_SOL))  # bytes -> a binary frame
        try:
            first = await next_event(ws)
        except ConnectionClosed:
            pytest.fail(f"closed without an answer: {ws.close_code} {ws.close_reason!r}")
        if first["type"] == "error":
            code, reason, _ = await closed_with(ws)
            assert code == 4400, (code, reason)
    assert first["type"] in {"accepted", "error"}, first


# ---------------------------------------------------------------------------------------------
# fan-out


@pytest.mark.parametrize("prepared_frames", [True, False], ids=["prepared-frames", "asgi-send"])
async def test_many_subscribers_receive_identical_events(
    make_stack: StackFactory, prepared_frames: bool
) -> None:
    """With the server's prepared-frame writer the hub writes to idle sockets itself; without
    it (any other ASGI server) every event goes through the socket's task. Same result."""
    stack = await make_stack(workers=0, prepared_frames=prepared_frames)
    accepted = await stack.submit(ONE_SOL)
    sockets = [await websockets.connect(accepted["wsUrl"]) for _ in range(20)]
    try:
        firsts = [await next_event(ws) for ws in sockets]  # each one is subscribed and replaying
        await stack.start_worker()
        rests = await asyncio.gather(*(rest_of(ws) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()
    lists = [[first, *rest] for first, rest in zip(firsts, rests, strict=True)]
    assert [e["status"] for e in lists[0]] == LIFECYCLE
    assert all(events == lists[0] for events in lists)
    order = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    assert lists[0] == order["events"]


def server_connections() -> list[object]:
    """uvicorn's connection protocols in this process (ours or its own, should the server
    not use ours), live or awaiting the collector."""
    kinds = (HttpToolsProtocol, WebSocketsSansIOProtocol)
    # issubclass(type(o)), not isinstance(o): isinstance on a dead weak proxy raises.
    return [o for o in gc.get_objects() if issubclass(type(o), kinds)]


def all_freed(objects: list[object]) -> asyncio.Event:
    """An event set once every one of `objects` has been freed (the caller drops its list)."""
    freed = asyncio.Event()
    left = len(objects)

    def one_freed() -> None:
        nonlocal left
        left -= 1
        if not left:
            freed.set()

    for obj in objects:
        weakref.finalize(obj, one_freed)
    return freed


async def test_a_finished_socket_is_freed_without_the_cycle_collector(
    make_stack: StackFactory,
) -> None:
    """Each socket's connection objects must be freed by reference counting the moment it
    ends. Left in a reference cycle, they wait for a full collection, which under load paused
    the API for ~100 ms every second or two. With the collector off, any cycle stays behind."""
    stack = await make_stack(workers=0)
    accepted = await stack.submit(ONE_SOL)
    gc.collect()
    gc.disable()
    try:
        kept_alive = len(server_connections())  # the HTTP client's connection
        sockets = [await websockets.connect(accepted["wsUrl"]) for _ in range(10)]
        opened = server_connections()
        # Each upgraded HTTP protocol is gone already; each WebSocket protocol is live.
        assert len(opened) == kept_alive + len(sockets)
        assert all(type(o) in (UpgradingHttpProtocol, PreparedFrameProtocol) for o in opened)
        freed = all_freed([o for o in opened if type(o) is PreparedFrameProtocol])
        del opened
        for ws in sockets:
            assert (await next_event(ws))["status"] == "pending"
        await stack.start_worker()
        for ws in sockets:
            assert [e["status"] for e in await rest_of(ws)] == LIFECYCLE[1:]
        # The server finishes each socket (its task, then the transport) just after the
        # client sees the close.
        async with asyncio.timeout(TIMEOUT_S):
            await freed.wait()
    finally:
        gc.enable()


async def test_subscriber_joining_mid_flight_sees_no_gap_or_duplicate(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(sim_latency_scale=0.1)  # an order takes a few hundred ms
    accepted = await stack.submit(ONE_SOL)
    order_id = accepted["orderId"]
    async with websockets.connect(accepted["wsUrl"]) as early:
        early_events = [await next_event(early)]
        while early_events[-1]["status"] != "routing":
            early_events.append(await next_event(early))
        async with websockets.connect(accepted["wsUrl"]) as late:
            # The late socket is open while the order is still in flight.
            status = (await stack.http.get(f"/api/orders/{order_id}")).json()["status"]
            late_events = await rest_of(late)
        early_events += await rest_of(early)
    assert status not in TERMINAL, "the order finished before the late socket joined"
    assert [e["seq"] for e in late_events] == list(range(1, len(late_events) + 1))
    assert late_events[-1]["status"] == "confirmed"
    assert late_events == early_events


# ---------------------------------------------------------------------------------------------
# concurrency


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    points = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    points.sort(key=lambda p: (p[0], p[1]))  # at a tie, an end comes before a start
    running = best = 0
    for _, delta in points:
        running += delta
        best = max(best, running)
    return best


async def test_worker_runs_at_most_its_concurrency_and_really_in_parallel(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(worker_concurrency=3, sim_latency_scale=0.05)
    accepted = await asyncio.gather(*(stack.submit(ONE_SOL) for _ in range(9)))
    histories = await asyncio.gather(*(follow(a["wsUrl"], 30) for a in accepted))
    assert all(h[-1]["status"] == "confirmed" for h in histories), [h[-1] for h in histories]
    intervals = []
    for events in histories:
        by_status = {e["status"]: e for e in events}
        intervals.append((parse_at(by_status["routing"]), parse_at(by_status["confirmed"])))
    overlap = max_overlap(intervals)
    assert 2 <= overlap <= 3, (overlap, intervals)


async def test_resume_with_after_seq_past_the_end_still_streams_to_the_finish(
    make_stack: StackFactory, replay_orders: int
) -> None:
    """An afterSeq beyond what the order has (a confused client) must not stall the socket:
    it goes live from the order's last event and closes after the terminal one."""
    stack = await make_stack(workers=0, ws_replay_orders=replay_orders)
    accepted = await stack.submit()
    url = f"{accepted['wsUrl']}&afterSeq=100"
    async with asyncio.timeout(30), websockets.connect(url) as ws:
        await stack.start_worker()
        statuses = [orjson.loads(m)["status"] async for m in ws]
    assert ws.close_code == 1000
    assert statuses == ["routing", "building", "submitted", "confirmed"]


async def test_the_benchmarks_lean_client_reads_exactly_what_the_server_sends(
    stack: Stack,
) -> None:
    """The fan-out and end-to-end figures are measured with `bench.wsclient`, not `websockets`:
    it must see every frame (events are longer than 125 bytes: extended lengths) and the close."""
    from bench import wsclient

    accepted = await stack.submit(ONE_SOL)
    got: list[dict[str, Any]] = []
    client = wsclient.for_url(accepted["wsUrl"], lambda raw, _at: got.append(orjson.loads(raw)))
    await client.open(timeout_s=TIMEOUT_S)
    async with asyncio.timeout(TIMEOUT_S):
        assert await client.closed == 1000
    assert client.close_reason == "order finished"
    order = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    assert got == order["events"] and got[-1]["status"] == "confirmed"


# ---------------------------------------------------------------------------------------------
# logging


async def test_sockets_log_no_line_of_their_own(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn and websockets would log three INFO lines per socket; at hundreds of sockets a
    second that is an access log in all but name (and its cost). The socket's own warnings and
    errors still reach `uvicorn.error`."""
    caplog.set_level("INFO")
    accepted = (await stack.http.post("/api/orders/execute", json=ONE_SOL)).json()
    events = await follow(accepted["wsUrl"])
    assert events[-1]["status"] == "confirmed"
    async with websockets.connect(order_url(stack, str(uuid.uuid4()))) as ws:
        assert (await closed_with(ws))[0] == 4404
    socket_lines = [r.getMessage() for r in caplog.records if r.name.startswith("uvicorn.error")]
    assert socket_lines == []
    quiet = logging.getLogger("uvicorn.error.sockets")
    assert quiet.level == logging.WARNING and not quiet.isEnabledFor(logging.INFO)
    quiet.error("a socket's error")  # still reaches uvicorn.error's handlers (and caplog)
    assert [r.getMessage() for r in caplog.records if r.name == quiet.name] == ["a socket's error"]


@pytest.mark.parametrize(
    "after_seq", ["-1", "1.5", "%D9%A1", "1" * 5000, "99999999999", "%201"], ids=lambda v: v[:12]
)
async def test_an_after_seq_that_is_not_a_small_whole_number_is_refused_with_4400(
    stack: Stack, after_seq: str
) -> None:
    """Not digits, other scripts' digits, thousands of digits: a clear 4400, never a crash."""
    accepted = await stack.submit(ONE_SOL)
    async with websockets.connect(f"{accepted['wsUrl']}&afterSeq={after_seq}") as ws:
        code, reason, messages = await closed_with(ws)
    assert (code, messages) == (4400, []), (code, reason)
    assert reason is not None and "afterSeq" in reason
