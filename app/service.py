"""What the API does, independent of HTTP: create, read and quote orders."""

import base64
import hashlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from shared import events, keys, queries, triggers
from shared.db import Conn
from shared.errors import (
    Conflict,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidOrder,
    NotFound,
)
from shared.jobqueue import enqueue_order
from shared.market.tokens import Token, from_base_units, resolve_token, unlisted_token
from shared.models import NewOrder, OrderDetail, OrderPublic, Stats
from shared.numbers import dec_str
from shared.routing import choose_route
from shared.sim import launches
from shared.sim.market import Market

log = logging.getLogger(__name__)

IDEMPOTENCY_CLAIM_TIMEOUT_S = 60


def ws_url(ws_base: str, order_id: uuid.UUID) -> str:
    return f"{ws_base}/api/orders/execute?orderId={order_id}"


async def create_order(
    db: asyncpg.Pool,
    redis: ArqRedis,
    order: NewOrder,
    ws_base: str,
    idempotency_key: str | None,
    on_committed: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Store the order with its `pending` event, then publish and queue it.

    The order is committed before it is queued: if queueing fails the sweeper queues it later,
    so an accepted order is never lost. With an idempotency key a retry returns the original
    response and creates nothing. `on_committed` gets the `pending` event once it is stored.
    """
    if order.type == "sniper" and await launches.launched_token(redis, order.token_out.mint):
        raise InvalidOrder(
            "tokenOut: this token has already launched; use a market order",
            [{"field": "tokenOut", "message": "already launched"}],
        )
    order_id = uuid.uuid4()
    async with db.acquire() as conn:
        if idempotency_key is None:
            # One statement writes the order and its first event: atomic without BEGIN/COMMIT.
            created_at, event = await queries.insert_order(conn, order_id, order)
            response = _accepted(order, order_id, created_at, ws_base)
        else:
            request_hash = hashlib.sha256(
                orjson.dumps(order.payload, option=orjson.OPT_SORT_KEYS)
            ).hexdigest()
            replay = await _claim_key(conn, idempotency_key, request_hash)
            if replay is not None:
                return replay
            async with conn.transaction():
                created_at, event = await queries.insert_order(conn, order_id, order)
                response = _accepted(order, order_id, created_at, ws_base)
                await queries.remember_response(conn, idempotency_key, order_id, response)
        if on_committed is not None:  # before anything awaits: no event can come in between
            on_committed(event)
    try:
        if order.type == "market":
            await enqueue_order(redis, order_id, first_event=event)
        else:
            await events.publish(redis, event)
            await triggers.index_waiting(
                redis,
                order_id,
                order.type,
                order.token_in.mint,
                order.token_out.mint,
                order.limit_price,
            )
            if order.type == "sniper":  # the launch may have come while this was indexed
                launched = await launches.launched_token(redis, order.token_out.mint)
                if launched is not None:
                    await triggers.fire_snipers(db, redis, launched.mint, launched.symbol)
    except RedisError as exc:
        log.warning(
            "order %s accepted but not queued yet (%s); the sweeper will queue it", order_id, exc
        )
    return response


def _accepted(
    order: NewOrder, order_id: uuid.UUID, created_at: datetime, ws_base: str
) -> dict[str, Any]:
    return {
        "orderId": str(order_id),
        "status": "pending",
        "type": order.type,
        "wsUrl": ws_url(ws_base, order_id),
        "clientOrderId": order.client_order_id,
        "createdAt": created_at.isoformat().replace("+00:00", "Z"),
    }


async def _claim_key(conn: Conn, key: str, request_hash: str) -> dict[str, Any] | None:
    """Claim the key for this request, or return the original response it already produced."""
    if await queries.claim_idempotency_key(conn, key, request_hash, IDEMPOTENCY_CLAIM_TIMEOUT_S):
        return None
    row = await queries.idempotency_record(conn, key)
    if row is None:  # expired between the two statements; treat as a conflict to stay safe
        raise IdempotencyInProgress("a request with this Idempotency-Key is being processed")
    if row["request_hash"] != request_hash:
        raise IdempotencyKeyReused("Idempotency-Key was already used with a different request body")
    if row["response"] is None:
        raise IdempotencyInProgress("a request with this Idempotency-Key is being processed")
    return dict(row["response"])


def _amount(mint: str, value: int | Decimal | None) -> str | None:
    if value is None:
        return None
    token = resolve_token(mint) or unlisted_token(mint)
    return dec_str(from_base_units(token, int(value)))


def _symbol(mint: str) -> str:
    token = resolve_token(mint)
    return token.symbol if token else mint


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else dec_str(value)


def order_public(row: asyncpg.Record) -> dict[str, Any]:
    return OrderPublic(
        order_id=str(row["id"]),
        type=row["type"],
        status=row["status"],
        token_in=_symbol(row["token_in"]),
        token_out=_symbol(row["token_out"]),
        amount_in=_amount(row["token_in"], row["amount_in"]) or "0",
        slippage_bps=row["slippage_bps"],
        client_order_id=row["client_order_id"],
        dex_chosen=row["dex_chosen"],
        pool=row["pool"],
        quote_price=_dec(row["quote_price"]),
        executed_price=_dec(row["executed_price"]),
        amount_out=_amount(row["token_out"], row["amount_out"]),
        fee_amount=_amount(row["token_in"], row["fee_amount"]),
        min_amount_out=_amount(row["token_out"], row["min_amount_out"]),
        tx_hash=row["tx_hash"],
        slot=row["slot"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        error_code=row["error_code"],
        limit_price=_dec(row["limit_price"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    ).model_dump(by_alias=True, mode="json")


async def get_order(db: asyncpg.Pool, order_id: str, signer: str | None) -> dict[str, Any]:
    oid = parse_order_id(order_id)
    async with db.acquire() as conn:
        row = await queries.get_order(conn, oid)
        if row is None:
            raise NotFound(f"order {order_id} not found")
        evts = await queries.get_events(conn, oid)
    detail = OrderDetail(
        **order_public(row),
        events=evts,
        signer=signer if row["tx_base64"] else None,
        signed_transaction=row["tx_base64"],
    )
    return detail.model_dump(by_alias=True, mode="json")


def parse_order_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"order {value[:64]} not found") from None


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{order_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, oid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(oid)
    except ValueError:
        raise InvalidOrder(
            "cursor: invalid", [{"field": "cursor", "message": "invalid cursor"}]
        ) from None


async def list_orders(
    db: asyncpg.Pool, status: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    before = decode_cursor(cursor) if cursor else None
    async with db.acquire() as conn:
        rows = await queries.list_orders(conn, status, limit + 1, before)
    page = rows[:limit]
    next_cursor = (
        encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    )
    return {
        "orders": [order_public(r) for r in page],
        "count": len(page),
        "nextCursor": next_cursor,
    }


async def stats(db: asyncpg.Pool, redis: ArqRedis) -> dict[str, Any]:
    async with db.acquire() as conn:
        by_status = await queries.count_by_status(conn)
        by_venue = await queries.count_by_venue(conn)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.scard(keys.ACTIVE_ORDERS)
        pipe.zcard(keys.QUEUE_NAME)
        active, queued = await pipe.execute()
    return Stats(
        active_orders=active,
        queued_jobs=queued,
        completed_jobs=by_status.get("confirmed", 0),
        failed_jobs=by_status.get("failed", 0),
        total_orders=sum(by_status.values()),
        by_status=by_status,
        by_venue=by_venue,
    ).model_dump(by_alias=True)


async def quote(
    market: Market, token_in: Token, token_out: Token, amount_in: int, slippage_bps: int
) -> dict[str, Any]:
    quotes, failed = await market.quotes(token_in, token_out, amount_in)
    route = choose_route(quotes, token_out, failed)
    if route is None:
        why = "; ".join(f"{v}: {e}" for v, e in failed.items())
        raise InvalidOrder(
            f"no venue can fill this order ({why})",
            [{"field": "amountIn", "message": "insufficient liquidity"}],
        )
    return {
        "tokenIn": token_in.symbol,
        "tokenOut": token_out.symbol,
        "amountIn": dec_str(from_base_units(token_in, amount_in)),
        "slippageBps": slippage_bps,
        "quotes": [q.to_event(token_in, token_out, slippage_bps) for q in route.quotes],
        "chosen": route.chosen.dex,
        "reason": route.reason,
    }


async def cancel_order(
    db: asyncpg.Pool, redis: ArqRedis, order_id: str, signer: str | None
) -> dict[str, Any]:
    """Cancel a waiting limit or sniper order; 409 once it is executing or finished."""
    oid = parse_order_id(order_id)
    async with db.acquire() as conn:
        row = await queries.get_order(conn, oid)
        if row is None:
            raise NotFound(f"order {order_id} not found")
        event = None
        if row["type"] != "market":
            event = await queries.transition(
                conn,
                oid,
                "cancelled",
                attempt=0,
                data={"reason": "cancelled by the client"},
                allowed_from=("pending",),
                untriggered_only=True,
            )
    if event is None:
        current = row["status"] if row["type"] == "market" else await _status(db, oid)
        raise Conflict(
            f"order is {current} and can no longer be cancelled"
            + ("" if row["type"] != "market" else " (market orders execute at once)"),
            [{"status": current}],
        )
    try:  # the cancel is committed; a stale index entry is harmless (claims re-check)
        await triggers.unindex(redis, oid, row["type"], row["token_in"], row["token_out"])
        await events.publish(redis, event)
    except RedisError as exc:
        log.warning("order %s cancelled; publish failed: %s", oid, exc)
    return await get_order(db, order_id, signer)


async def _status(db: asyncpg.Pool, order_id: uuid.UUID) -> str:
    async with db.acquire() as conn:
        row = await queries.get_order(conn, order_id)
    status = "gone" if row is None else str(row["status"])
    return "executing" if status == "pending" else status
