"""What the API does, independent of HTTP: create, read and quote orders."""

import hashlib
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from app.deps import EXECUTE_PATH, Resources
from app.outages import Dependency
from shared import events, keys, queries, triggers
from shared.apikeys import Caller, Scope
from shared.db import Conn
from shared.errors import (
    Conflict,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidOrder,
    NotFound,
    OutcomeUnknown,
    RiskLimit,
    ServiceUnavailable,
)
from shared.jobqueue import enqueue_order
from shared.logs import ORDER_ID, REQUEST_ID
from shared.market.routing import MAX_PRICE_IMPACT_PCT
from shared.market.tokens import from_base_units, resolve_token, unlisted_token
from shared.models import (
    TERMINAL_STATUSES,
    NewOrder,
    OrderDetail,
    OrderPublic,
    Stats,
    StatsFigures,
)
from shared.numbers import dec_str
from shared.rows import OrderRow
from shared.sim import launches
from shared.sim.market import Market

log = logging.getLogger(__name__)

ACCEPT_MARGIN_S = 0.25


def ws_url(ws_base: str, order_id: uuid.UUID) -> str:
    return f"{ws_base}{EXECUTE_PATH}?orderId={order_id}"


async def accept_order(
    res: Resources,
    order: NewOrder,
    caller: Caller,
    client: str,
    ws_base: str,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """Check, admit, store and queue a new order for `caller`'s account: the one path of POST
    and the WebSocket submit. A refusal (risk limit, rate, queue) writes nothing.

    Answers within the dependencies' deadlines whatever the servers do, and a 503 tells the
    truth: `ServiceUnavailable` means the order does not exist and never will (the order's
    commit is refused once its client has been answered, migration 004); `OutcomeUnknown`
    says that it may, and how to find out.
    """
    limits = await res.risk.limits(caller)
    await res.risk.check(limits, order)
    if caller.key_id is None:  # anonymous (AUTH_MODE=open): counted per client address
        await res.redis_guard.run(lambda _: res.admission.check(client))
    else:
        await res.redis_guard.run(
            lambda _: res.admission.check(client, caller.account, limits.max_orders_per_s)
        )
    if order.type == "sniper":
        launched = await res.redis_guard.run(
            lambda r: launches.launched_token(r, order.token_out.mint)
        )
        if launched is not None:
            raise InvalidOrder(
                "tokenOut: this token has already launched; use a market order",
                [{"field": "tokenOut", "message": "already launched"}],
            )
    response, event = await _store(
        res.pg_guard, order, ws_base, idempotency_key, caller.account, limits.max_open_orders
    )
    if event is None:  # an Idempotency-Key replay: the original response, nothing new
        return response
    res.owners.remember(uuid.UUID(event["orderId"]), caller.account)
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
    account: str,
    max_open_orders: int,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Commit the order with its `pending` event: (response, event), or (the original
    response, None) for a replayed Idempotency-Key. With `max_open_orders`, the account's
    open orders are counted under its lock in the same transaction, so that parallel
    submissions cannot overshoot the limit."""
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
            if idempotency_key is None and not max_open_orders:  # one statement: atomic
                created_at, event = await queries.insert_order(
                    conn, order_id, order, accept_by, account
                )
                return _accepted(order, order_id, created_at, ws_base, account), event
            request_hash = hashlib.sha256(
                orjson.dumps(order.payload, option=orjson.OPT_SORT_KEYS)
            ).hexdigest()
            async with conn.transaction():
                if idempotency_key is not None:
                    replay = await _replay(conn, account, idempotency_key, request_hash)
                    if replay is not None:
                        return replay, None
                if max_open_orders:
                    await _within_open_orders(conn, account, max_open_orders)
                created_at, event = await queries.insert_order(
                    conn, order_id, order, accept_by, account
                )
                response = _accepted(order, order_id, created_at, ws_base, account)
                if idempotency_key is not None:
                    await queries.remember_response(
                        conn, account, idempotency_key, request_hash, order_id, response
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


async def _within_open_orders(conn: Conn, account: str, limit: int) -> None:
    open_orders = await queries.lock_open_orders(conn, account)
    if open_orders >= limit:
        raise RiskLimit(
            f"account {account} has {open_orders} open orders; its limit is {limit}",
            "max_open_orders",
            limit,
        )


def _accepted(
    order: NewOrder, order_id: uuid.UUID, created_at: datetime, ws_base: str, account: str
) -> dict[str, Any]:
    return {
        "orderId": str(order_id),
        "account": account,
        "status": "pending",
        "type": order.type,
        "wsUrl": ws_url(ws_base, order_id),
        "clientOrderId": order.client_order_id,
        "createdAt": created_at.isoformat().replace("+00:00", "Z"),
    }


async def _replay(conn: Conn, account: str, key: str, request_hash: str) -> dict[str, Any] | None:
    """The original response of this account's Idempotency-Key, or None if it has none yet
    (this request now holds the key until its transaction ends)."""
    if not await queries.lock_idempotency_key(conn, account, key):
        raise IdempotencyInProgress("a request with this Idempotency-Key is being processed")
    row = await queries.idempotency_record(conn, account, key)
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


def order_public(row: OrderRow) -> dict[str, Any]:
    return OrderPublic(
        order_id=str(row.id),
        account=row.account,
        type=row.type,
        status=row.status,
        token_in=_symbol(row.token_in),
        token_out=_symbol(row.token_out),
        amount_in=_amount(row.token_in, row.amount_in),
        exact_amount_out=_amount(row.token_out, row.exact_amount_out),
        swap_mode="ExactIn" if row.exact_amount_out is None else "ExactOut",
        slippage_bps=row.slippage_bps,
        client_order_id=row.client_order_id,
        dex_chosen=row.dex_chosen,
        pool=row.pool,
        quote_price=_dec(row.quote_price),
        executed_price=_dec(row.executed_price),
        amount_out=_amount(row.token_out, row.amount_out),
        fee_amount=_amount(row.token_in, row.fee_amount),
        min_amount_out=_amount(row.token_out, row.min_amount_out),
        tx_hash=row.tx_hash,
        slot=row.slot,
        attempts=row.attempts,
        last_error=row.last_error,
        error_code=row.error_code,
        limit_price=_dec(row.limit_price),
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    ).model_dump(by_alias=True, mode="json")


async def get_order(
    pg: Dependency[asyncpg.Pool], order_id: str, signer: str | None, account: str
) -> dict[str, Any]:
    """The account's order with its events; another account's order is 404, as an unknown id."""
    oid = parse_order_id(order_id)

    async def read(db: asyncpg.Pool) -> tuple[OrderRow | None, list[dict[str, Any]]]:
        async with db.acquire() as conn:
            row = await queries.get_own_order(conn, oid, account)
            return row, [] if row is None else await queries.get_events(conn, oid)

    row, evts = await pg.run(read)
    if row is None:
        raise NotFound(f"order {order_id} not found")
    detail = OrderDetail(
        **order_public(row),
        events=evts,
        signer=signer if row.tx_base64 else None,
        signed_transaction=row.tx_base64,
    )
    return detail.model_dump(by_alias=True, mode="json")


def parse_order_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"order {value[:64]} not found") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"([0-9]{1,16})_([0-9a-f]{32})")  # app.routes.orders.CURSOR_PATTERN


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{order_id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Every string of the documented shape is a cursor (the schema says exactly this)."""
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidOrder("cursor: invalid", [{"field": "cursor", "message": "invalid cursor"}])
    micros, hex_id = match.groups()
    return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex_id)


async def list_orders(
    pg: Dependency[asyncpg.Pool],
    account: str,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    before = decode_cursor(cursor) if cursor else None

    async def read(db: asyncpg.Pool) -> list[OrderRow]:
        async with db.acquire() as conn:
            return await queries.list_orders(conn, account, status, limit + 1, before)

    rows = await pg.run(read)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return {
        "orders": [order_public(r) for r in page],
        "count": len(page),
        "nextCursor": next_cursor,
    }


async def stats(
    pg: Dependency[asyncpg.Pool], redis: Dependency[ArqRedis], caller: Caller
) -> dict[str, Any]:
    """The caller's account's figures; for `admin`, the engine's too (under `global`)."""
    account = caller.account
    engine_wide = caller.can(Scope.ADMIN) and caller.key_id is not None

    Counts = dict[str, int]

    async def counts(db: asyncpg.Pool) -> tuple[Counts, Counts, int, tuple[Counts, Counts] | None]:
        async with db.acquire() as conn:
            by_status = await queries.count_by_status(conn, account)
            by_venue = await queries.count_by_venue(conn, account)
            runnable = await queries.count_runnable(conn, account)
            if not engine_wide:
                return by_status, by_venue, runnable, None
            everything = await queries.count_by_status(conn), await queries.count_by_venue(conn)
            return by_status, by_venue, runnable, everything

    async def depths(client: ArqRedis) -> list[int]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.scard(keys.ACTIVE_ORDERS)
            pipe.zcard(keys.QUEUE_NAME)
            return list(await pipe.execute())

    by_status, by_venue, runnable, engine = await pg.run(counts)
    active = sum(n for status, n in by_status.items() if status not in TERMINAL_STATUSES)
    own = _figures(active, runnable, by_status, by_venue).model_dump()
    if engine is None:
        return Stats(account=account, **own).model_dump(by_alias=True)
    active, queued = await redis.run(depths)
    everything = _figures(active, queued, *engine)
    return Stats(account=account, global_=everything, **own).model_dump(by_alias=True)


def _figures(
    active: int, queued: int, by_status: dict[str, int], by_venue: dict[str, int]
) -> StatsFigures:
    return StatsFigures(
        active_orders=active,
        queued_jobs=queued,
        completed_jobs=by_status.get("confirmed", 0),
        failed_jobs=by_status.get("failed", 0),
        total_orders=sum(by_status.values()),
        by_status=by_status,
        by_venue=by_venue,
    )


async def quote(redis: Dependency[ArqRedis], market: Market, order: NewOrder) -> dict[str, Any]:
    """The route the engine would take for `order` now, without executing it."""
    exact_out = order.amount_out is not None
    amount = order.amount_out if exact_out else order.amount_in
    assert amount is not None  # validate_order requires one of the two
    decision = await redis.run(
        lambda _: market.route(order.token_in, order.token_out, amount, order.route, exact_out)
    )
    if decision is None:
        field = "amountOut" if exact_out else "amountIn"
        raise InvalidOrder(
            "no route can fill this order (insufficient liquidity, or price impact over "
            f"{MAX_PRICE_IMPACT_PCT}%)",
            [{"field": field, "message": "insufficient liquidity"}],
        )
    return {
        "tokenIn": order.token_in.symbol,
        "tokenOut": order.token_out.symbol,
        "slippageBps": order.slippage_bps,
    } | decision.to_event(order.token_in, order.token_out, order.slippage_bps)


async def cancel_order(res: Resources, order_id: str, account: str) -> dict[str, Any]:
    """Cancel the account's waiting limit or sniper order; 409 once it is executing or
    finished, 404 for another account's order as for an unknown id."""
    oid = parse_order_id(order_id)

    async def cancel(db: asyncpg.Pool) -> tuple[OrderRow | None, dict[str, Any] | None, str]:
        async with db.acquire() as conn:
            row = await queries.get_own_order(conn, oid, account)
            if row is None or row.type == "market":
                return row, None, "" if row is None else str(row.status)
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
            status = "gone" if current is None else str(current.status)
            return row, None, "executing" if status == "pending" else status

    row, event, current = await res.pg_guard.run(cancel)
    if row is None:
        raise NotFound(f"order {order_id} not found")
    if event is None:
        raise Conflict(
            f"order is {current} and can no longer be cancelled"
            + ("" if row.type != "market" else " (market orders execute at once)"),
            [{"status": current}],
        )
    res.metrics.cancelled()
    try:
        await res.redis_guard.run(lambda r: triggers.retire(r, row, event))
    except ServiceUnavailable as exc:  # the cancel is committed: see `triggers.retire`
        log.warning("order %s cancelled; its publish failed: %s", oid, exc)
    return await get_order(res.pg_guard, order_id, res.signer, account)


async def owns(res: Resources, account: str, order_id: uuid.UUID) -> bool:
    """Whether the order exists and is the account's (no read for an order accepted here)."""
    owner = res.owners.get(order_id)
    if owner is None:

        async def read(db: asyncpg.Pool) -> str | None:
            async with db.acquire() as conn:
                return await queries.order_account(conn, order_id)

        owner = await res.pg_guard.run(read)
    return owner == account
