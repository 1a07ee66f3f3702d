"""What the API does, independent of HTTP: create, read and quote orders."""

import base64
import hashlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from app.deps import Resources
from app.outages import Dependency
from shared import events, keys, queries, triggers
from shared.db import Conn
from shared.errors import (
    Conflict,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidOrder,
    NotFound,
    OutcomeUnknown,
    ServiceUnavailable,
)
from shared.logs import ORDER_ID, REQUEST_ID
from shared.market.routing import choose_route
from shared.market.tokens import Token, from_base_units, resolve_token, unlisted_token
from shared.models import NewOrder, OrderDetail, OrderPublic, Stats
from shared.numbers import dec_str
from shared.queries import Row
from shared.queue import enqueue_order
from shared.sim import launches
from shared.sim.market import Market

log = logging.getLogger(__name__)

ACCEPT_MARGIN_S = 0.25


def ws_url(ws_base: str, order_id: uuid.UUID) -> str:
    return f"{ws_base}/api/orders/execute?orderId={order_id}"


async def accept_order(
    res: Resources,
    order: NewOrder,
    client: str,
    ws_base: str,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """Admit, store and queue a new order: the one path of POST and the WebSocket submit.

    Answers within the dependencies' deadlines whatever the servers do, and a 503 tells the
    truth: `ServiceUnavailable` means the order does not exist and never will (the order's
    commit is refused once its client has been answered, migration 004); `OutcomeUnknown`
    says that it may, and how to find out.
    """
    await res.redis_guard.run(lambda _: res.admission.check(client))
    if order.type == "sniper":
        launched = await res.redis_guard.run(
            lambda r: launches.launched_token(r, order.token_out.mint)
        )
        if launched is not None:
            raise InvalidOrder(
                "tokenOut: this token has already launched; use a market order",
                [{"field": "tokenOut", "message": "already launched"}],
            )
    response, event = await _store(res.pg_guard, order, ws_base, idempotency_key)
    if event is None:  # an Idempotency-Key replay: the original response, nothing new
        return response
    res.hub.remember(event)  # before anything awaits: no event can come in between
    ORDER_ID.set(event["orderId"])  # this request's later log lines are about this order
    try:
        await res.redis_guard.run(lambda r: _queue(res.db, r, order, event))
    except (ServiceUnavailable, RedisError) as exc:
        log.warning(
            "order %s accepted but not queued yet (%s); the sweeper will queue it",
            event["orderId"],
            exc,
        )
    res.metrics.submitted(order.type)
    return response


async def _store(
    pg: Dependency[asyncpg.Pool],
    order: NewOrder,
    ws_base: str,
    idempotency_key: str | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Commit the order with its `pending` event: (response, event), or (the original
    response, None) for a replayed Idempotency-Key."""
    order_id = uuid.uuid4()
    # The server refuses the commit after `accept_by`, a little before this request stops
    # waiting (the margin absorbs clock skew between the API's host and the database's).
    margin_s = min(ACCEPT_MARGIN_S, pg.timeout_s / 4)
    accept_by = datetime.now(UTC) + timedelta(seconds=pg.timeout_s - margin_s)
    sent = False

    async def store(db: asyncpg.Pool) -> tuple[dict[str, Any], dict[str, Any] | None]:
        nonlocal sent
        async with db.acquire() as conn:
            sent = True
            if idempotency_key is None:  # one statement: atomic without BEGIN/COMMIT
                created_at, event = await queries.insert_order(conn, order_id, order, accept_by)
                return _accepted(order, order_id, created_at, ws_base), event
            request_hash = hashlib.sha256(
                orjson.dumps(order.payload, option=orjson.OPT_SORT_KEYS)
            ).hexdigest()
            async with conn.transaction():
                replay = await _replay(conn, idempotency_key, request_hash)
                if replay is not None:
                    return replay, None
                created_at, event = await queries.insert_order(conn, order_id, order, accept_by)
                response = _accepted(order, order_id, created_at, ws_base)
                await queries.remember_response(
                    conn, idempotency_key, request_hash, order_id, response
                )
                return response, event

    try:
        return await pg.run(store)
    except ServiceUnavailable:
        if sent:  # the statement may have reached the server: say so, with the id to look up
            raise OutcomeUnknown(str(order_id), pg.name) from None
        raise
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == queries.ACCEPT_DEADLINE_PASSED:
            raise ServiceUnavailable(
                f"{pg.name} answered too late; the order was not created", 2
            ) from None
        raise


async def _queue(db: asyncpg.Pool, redis: ArqRedis, order: NewOrder, event: dict[str, Any]) -> None:
    """Hand a stored order to the workers: market orders to the queue, the others to the
    waiting index (a sniper whose token launched meanwhile fires at once)."""
    order_id = uuid.UUID(event["orderId"])
    if order.type == "market":
        await enqueue_order(redis, order_id, first_event=event, request_id=REQUEST_ID.get())
        return
    await events.publish(redis, event)
    await triggers.index_waiting(
        redis, order_id, order.type, order.token_in.mint, order.token_out.mint, order.limit_price
    )
    if order.type == "sniper":  # the launch may have come while this was indexed
        launched = await launches.launched_token(redis, order.token_out.mint)
        if launched is not None:
            await triggers.fire_snipers(db, redis, launched.mint, launched.symbol)


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


async def _replay(conn: Conn, key: str, request_hash: str) -> dict[str, Any] | None:
    """The original response of this Idempotency-Key, or None if it has none yet (this
    request now holds the key until its transaction ends)."""
    if not await queries.lock_idempotency_key(conn, key):
        raise IdempotencyInProgress("a request with this Idempotency-Key is being processed")
    row = await queries.idempotency_record(conn, key)
    if row is None:
        return None
    if row["request_hash"] != request_hash:
        raise IdempotencyKeyReused("Idempotency-Key was already used with a different request body")
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


async def get_order(
    pg: Dependency[asyncpg.Pool], order_id: str, signer: str | None
) -> dict[str, Any]:
    oid = parse_order_id(order_id)

    async def read(db: asyncpg.Pool) -> tuple[Row | None, list[dict[str, Any]]]:
        async with db.acquire() as conn:
            row = await queries.get_order(conn, oid)
            return row, [] if row is None else await queries.get_events(conn, oid)

    row, evts = await pg.run(read)
    if row is None:
        raise NotFound(f"order {order_id} not found")
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
    pg: Dependency[asyncpg.Pool], status: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    before = decode_cursor(cursor) if cursor else None

    async def read(db: asyncpg.Pool) -> list[Row]:
        async with db.acquire() as conn:
            return await queries.list_orders(conn, status, limit + 1, before)

    rows = await pg.run(read)
    page = rows[:limit]
    next_cursor = (
        encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    )
    return {
        "orders": [order_public(r) for r in page],
        "count": len(page),
        "nextCursor": next_cursor,
    }


async def stats(pg: Dependency[asyncpg.Pool], redis: Dependency[ArqRedis]) -> dict[str, Any]:
    async def counts(db: asyncpg.Pool) -> tuple[dict[str, int], dict[str, int]]:
        async with db.acquire() as conn:
            return await queries.count_by_status(conn), await queries.count_by_venue(conn)

    async def depths(client: ArqRedis) -> list[int]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.scard(keys.ACTIVE_ORDERS)
            pipe.zcard(keys.QUEUE_NAME)
            return list(await pipe.execute())

    by_status, by_venue = await pg.run(counts)
    active, queued = await redis.run(depths)
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
    redis: Dependency[ArqRedis],
    market: Market,
    token_in: Token,
    token_out: Token,
    amount_in: int,
    slippage_bps: int,
) -> dict[str, Any]:
    quotes, failed = await redis.run(lambda _: market.quotes(token_in, token_out, amount_in))
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


async def cancel_order(res: Resources, order_id: str) -> dict[str, Any]:
    """Cancel a waiting limit or sniper order; 409 once it is executing or finished."""
    oid = parse_order_id(order_id)

    async def cancel(db: asyncpg.Pool) -> tuple[Row | None, dict[str, Any] | None, str]:
        async with db.acquire() as conn:
            row = await queries.get_order(conn, oid)
            if row is None or row["type"] == "market":
                return row, None, "" if row is None else str(row["status"])
            event = await queries.transition(
                conn,
                oid,
                "cancelled",
                attempt=0,
                data={"reason": "cancelled by the client"},
                allowed_from=("pending",),
                untriggered_only=True,
            )
            if event is not None:
                return row, event, "cancelled"
            current = await queries.get_order(conn, oid)
            status = "gone" if current is None else str(current["status"])
            return row, None, "executing" if status == "pending" else status

    row, event, current = await res.pg_guard.run(cancel)
    if row is None:
        raise NotFound(f"order {order_id} not found")
    if event is None:
        raise Conflict(
            f"order is {current} and can no longer be cancelled"
            + ("" if row["type"] != "market" else " (market orders execute at once)"),
            [{"status": current}],
        )
    res.metrics.cancelled()
    try:
        await res.redis_guard.run(lambda r: triggers.retire(r, row, event))
    except ServiceUnavailable as exc:  # the cancel is committed: see `triggers.retire`
        log.warning("order %s cancelled; its publish failed: %s", oid, exc)
    return await get_order(res.pg_guard, order_id, res.signer)
