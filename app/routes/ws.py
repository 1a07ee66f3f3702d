"""The WebSocket on `/api/orders/execute`: follow an order, or submit one and follow it.

Replay then live, with no gap and no duplicate: the socket subscribes to the hub *before* it
reads history (from the hub's memory of recent orders, else PostgreSQL), then drops live events
it already sent (by `seq`). Anything the live feed missed (a Redis blip, a full buffer) is read
back from PostgreSQL.
"""

import asyncio
import contextlib
import logging
import uuid
from typing import cast

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from app import service
from app.deps import Resources, get_resources, ws_base
from app.hub import FINISHED_CLOSE, Delivery, Subscription, Write
from app.routes.orders import MAX_BODY_BYTES, client_key, parse_json
from app.wsserver import PREPARED_FRAMES
from shared import queries
from shared.errors import EngineError, PayloadTooLarge
from shared.models import TERMINAL_STATUSES, validate_order

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_ORDER = 4400
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408  # the reader fell too far behind; reconnect with afterSeq
SUBMIT_TIMEOUT_S = 30.0
CLOSE_GRACE_S = 5.0


@router.websocket("/api/orders/execute")
async def order_socket(websocket: WebSocket) -> None:
    res = await get_resources(websocket)
    await websocket.accept()
    params = websocket.query_params
    try:
        if "orderId" in params:
            order_id = await _existing_order(websocket, res, params["orderId"])
        else:
            order_id = await _submitted_order(websocket, res)
        if order_id is None:
            return
        after_seq = int(params.get("afterSeq", "0")) if params.get("afterSeq", "0").isdigit() else 0
        await _follow(websocket, res, order_id, after_seq)
    except WebSocketDisconnect:
        return


async def _existing_order(ws: WebSocket, res: Resources, raw_id: str) -> uuid.UUID | None:
    """The id to follow; whether the order exists is settled by the first history read."""
    try:
        return uuid.UUID(raw_id)
    except ValueError:
        await _not_found(ws, raw_id)
        return None


async def _not_found(ws: WebSocket, raw_id: str) -> None:
    await ws.close(CLOSE_NOT_FOUND, f"order {raw_id[:64]} not found")


async def _submitted_order(ws: WebSocket, res: Resources) -> uuid.UUID | None:
    """Submit-over-the-socket: the first message is the order, answered with `accepted`."""
    try:
        raw = await asyncio.wait_for(_first_message(ws), SUBMIT_TIMEOUT_S)
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"order message over {MAX_BODY_BYTES} bytes")
        order = validate_order(parse_json(raw))
        accepted = await service.accept_order(res, order, client_key(ws), ws_base(ws), None)
    except TimeoutError:
        await ws.close(CLOSE_INVALID_ORDER, "expected an order as the first message")
        return None
    except EngineError as err:
        res.metrics.rejected(err.code)
        await ws.send_bytes(orjson.dumps({"type": "error", **err.body()}))
        await ws.close(CLOSE_INVALID_ORDER, err.message[:120])
        return None
    message = {**accepted, "type": "accepted", "orderType": accepted["type"]}
    await ws.send_text(orjson.dumps(message).decode())
    return uuid.UUID(accepted["orderId"])


async def _first_message(ws: WebSocket) -> bytes:
    """The first frame, text or binary, as bytes."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", CLOSE_GOING_AWAY))
    if message.get("text") is not None:
        return str(message["text"]).encode()
    return bytes(message.get("bytes") or b"")


async def _follow(ws: WebSocket, res: Resources, order_id: uuid.UUID, after_seq: int) -> None:
    too_slow: ReaderTooSlow | None = None
    with res.hub.subscribe(str(order_id), _prepared_writer(ws)) as sub:
        streamer = asyncio.create_task(_stream(ws, res, sub, order_id, after_seq))
        reader = asyncio.create_task(_drain_client(ws))
        done, pending = await asyncio.wait({streamer, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await task
        for task in done:
            exc = task.exception()
            if isinstance(exc, ReaderTooSlow):
                too_slow = exc
            elif exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                raise exc
    res.metrics.socket_closed(max(sub.last - after_seq, 0), too_slow is not None)
    if too_slow is not None:  # the subscription is released already; now say why, briefly
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE_S):  # a stalled reader may never take it
                reason = f"reader too slow; reconnect with afterSeq={too_slow.last_seq}"
                await ws.close(CLOSE_TOO_SLOW, reason)


async def _drain_client(ws: WebSocket) -> None:
    """Read (and ignore) client messages so a disconnect is noticed at once."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


class ReaderTooSlow(Exception):
    """The client is not reading fast enough for its buffer or a send timed out."""

    def __init__(self, last_seq: int = 0) -> None:
        super().__init__(last_seq)
        self.last_seq = last_seq


async def _stream(
    ws: WebSocket, res: Resources, sub: Subscription, order_id: uuid.UUID, after_seq: int
) -> None:
    sub.last = after_seq
    try:
        recent = res.hub.recent(str(order_id), after_seq)
        if recent is not None:  # the hub saw the order from its first event: no read
            await _send_all(ws, res, sub, recent)
        elif not await _replay_stored(ws, res, sub, order_id):
            return  # no such order: closed with 4404
        while not sub.finished:
            if sub.queue.empty():
                sub.lend()  # with a prepared-frame writer, the hub writes while we wait
            delivery = await sub.queue.get()
            sub.reclaim()
            if sub.finished:
                break
            if sub.overflowed:
                raise ReaderTooSlow
            if not delivery.seq or delivery.seq > sub.last + 1:  # a resync, or a gap
                await _catch_up(ws, res, sub, order_id)
            elif delivery.seq == sub.last + 1:
                await _send(ws, sub, delivery, res.settings.ws_send_timeout_s)
    except ReaderTooSlow:
        raise ReaderTooSlow(max(sub.last, 0)) from None
    if not sub.closed:
        await ws.close(*FINISHED_CLOSE)


async def _replay_stored(
    ws: WebSocket, res: Resources, sub: Subscription, order_id: uuid.UUID
) -> bool:
    """Replay from PostgreSQL; False (after closing with 4404) when the order does not exist."""
    after_seq = sub.last
    await _catch_up(ws, res, sub, order_id)
    if sub.last == after_seq and not sub.finished:  # nothing after afterSeq
        async with res.db.acquire() as conn:
            row = await queries.get_order(conn, order_id)
        if row is None:
            await _not_found(ws, str(order_id))
            return False
        if row["status"] in TERMINAL_STATUSES and row["last_seq"] <= sub.last:
            sub.finished = True  # resumed after the terminal event: nothing more will come
        else:
            sub.last = min(sub.last, row["last_seq"])  # an afterSeq past the end: go live
    return True


def _prepared_writer(ws: WebSocket) -> Write | None:
    """The server's prepared-frame writer (`app.wsserver`), if it has one."""
    extension = ws.scope.get("extensions", {}).get(PREPARED_FRAMES)
    return None if extension is None else cast(Write, extension["write"])


async def _catch_up(ws: WebSocket, res: Resources, sub: Subscription, order_id: uuid.UUID) -> None:
    """Send every stored event after `sub.last`, up to the terminal one."""
    res.hub.forget(str(order_id))  # the live feed missed something: memory may have too
    async with res.db.acquire() as conn:
        history = await queries.get_events(conn, order_id, sub.last)
    await _send_all(ws, res, sub, [Delivery.of(event) for event in history])


async def _send_all(
    ws: WebSocket, res: Resources, sub: Subscription, events: list[Delivery]
) -> None:
    """Send `events` (consecutive seqs after `sub.last`), up to the terminal one: in one write
    when the socket takes it at once (a replay is often the whole order), else one by one."""
    for end, delivery in enumerate(events):
        if delivery.terminal:
            events = events[: end + 1]
            break
    if not events or sub.write_now(*events):
        return
    for delivery in events:
        await _send(ws, sub, delivery, res.settings.ws_send_timeout_s)
        if sub.finished:
            break


async def _send(ws: WebSocket, sub: Subscription, delivery: Delivery, timeout_s: float) -> None:
    """Send one event (straight to the socket when it takes it at once, else through ASGI,
    waiting for its buffer at most `timeout_s`) and advance `sub`."""
    if sub.write_now(delivery):
        return
    if ws.client_state != WebSocketState.CONNECTED:
        raise WebSocketDisconnect(CLOSE_GOING_AWAY)
    try:
        async with asyncio.timeout(timeout_s):  # cheaper than wait_for: no task per send
            await ws.send_text(delivery.text)
    except TimeoutError:
        raise ReaderTooSlow from None
    sub.last = delivery.seq
    sub.finished = delivery.terminal
