"""The WebSocket on `/api/orders/execute`: follow an order, or submit one and follow it.

This module turns the connection into an order to follow; `app.stream` streams it.
"""

import asyncio
import re
import uuid
from collections.abc import Sequence

import orjson
from fastapi import FastAPI, WebSocket, WebSocketDisconnect, params

from app import service
from app.callers import websocket_caller
from app.deps import EXECUTE_PATH, Resources, get_resources, ws_base
from app.hotpath import add_connection_only_websocket_route
from app.routes.orders import MAX_BODY_BYTES, client_key, parse_json
from app.stream import (
    CLOSE_GOING_AWAY,
    CLOSE_NOT_FOUND,
    CLOSE_TRY_AGAIN,
    OrderStream,
    prepared_writer,
)
from shared.apikeys import Caller, Scope
from shared.errors import EngineError, PayloadTooLarge, ServiceUnavailable
from shared.models import validate_order

CLOSE_INVALID_ORDER = 4400
CLOSE_FORBIDDEN_ORIGIN = 4403  # a web page from an origin not in ALLOWED_ORIGINS
SUBMIT_TIMEOUT_S = 30.0
_AFTER_SEQ = re.compile(r"[0-9]{1,9}", re.ASCII)


async def order_socket(websocket: WebSocket) -> None:
    res = await get_resources(websocket)
    await websocket.accept()
    if not res.origins.allows(websocket):  # cross-site WebSocket hijacking: nothing read or sent
        await websocket.close(CLOSE_FORBIDDEN_ORIGIN, "origin not allowed")
        return
    params = websocket.query_params
    # Checked in the handler: the socket must be open for its close code to reach the client.
    needed = Scope.READ if "orderId" in params else Scope.TRADE
    caller = await websocket_caller(websocket, res, needed)
    if caller is None:
        return
    after_seq = _after_seq(params.get("afterSeq", "0"))
    if after_seq is None:  # refused before anything is read or written
        await websocket.close(CLOSE_INVALID_ORDER, "afterSeq: a whole number of events")
        return
    try:
        if "orderId" in params:
            order_id = await _existing_order(
                websocket, res, params["orderId"], caller.account, after_seq
            )
        else:
            order_id = await _submitted_order(websocket, res, caller)
        if order_id is None:
            return
        stream = OrderStream(
            websocket,
            order_id,
            res.hub,
            res.pg_guard,
            queue_size=res.settings.ws_buffer_events,
            send_timeout_s=res.settings.ws_send_timeout_s,
            writer=prepared_writer(websocket),
        )
        try:
            await stream.run(after_seq)
        finally:
            res.metrics.socket_closed(max(stream.last - after_seq, 0), stream.too_slow)
    except WebSocketDisconnect:
        return  # the client left


def add_order_socket(app: FastAPI, dependencies: Sequence[params.Depends]) -> None:
    """Serve the WebSocket on `/api/orders/execute` from the app's own router, with
    `dependencies` (see `app.main.create_app` for why there)."""
    add_connection_only_websocket_route(app, EXECUTE_PATH, order_socket, dependencies)


def _after_seq(raw: str) -> int | None:
    """`afterSeq` as sent (ASCII digits, nine at most: no order has that many events)."""
    return int(raw) if _AFTER_SEQ.fullmatch(raw) else None


async def _existing_order(
    ws: WebSocket, res: Resources, raw_id: str, account: str, after_seq: int
) -> uuid.UUID | None:
    """The id to follow, if the order is the account's: another account's order is closed
    4404 exactly as an unknown one (1013 with the afterSeq to resume from, when PostgreSQL
    cannot say)."""
    try:
        order_id = uuid.UUID(raw_id)
        if await service.owns(res, account, order_id):
            return order_id
    except ValueError:
        pass
    except ServiceUnavailable as err:
        await ws.close(CLOSE_TRY_AGAIN, f"{err.message[:60]}; reconnect with afterSeq={after_seq}")
        return None
    await _not_found(ws, raw_id)
    return None


async def _not_found(ws: WebSocket, raw_id: str) -> None:
    await ws.close(CLOSE_NOT_FOUND, f"order {raw_id[:64]} not found")


async def _submitted_order(ws: WebSocket, res: Resources, caller: Caller) -> uuid.UUID | None:
    """Submit-over-the-socket: the first message is the order, answered with `accepted`."""
    try:
        raw = await asyncio.wait_for(_first_message(ws), SUBMIT_TIMEOUT_S)
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"order message over {MAX_BODY_BYTES} bytes")
        order = validate_order(parse_json(raw))
        accepted = await service.accept_order(res, order, caller, client_key(ws), ws_base(ws), None)
    except TimeoutError:
        await ws.close(CLOSE_INVALID_ORDER, "expected an order as the first message")
        return None
    except EngineError as err:
        res.metrics.rejected(err.code)
        await ws.send_text(orjson.dumps({"type": "error", **err.body()}).decode())
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
