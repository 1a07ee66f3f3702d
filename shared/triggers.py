"""Waiting limit and sniper orders: their index in Redis, their triggers, and expiry.

Limit orders are indexed per directed pair in a sorted set scored by limit price. On a market
move, the best rate any route of the pair could give (spot after the least fee, hop by hop)
bounds which limits could possibly fill (a full-size fill is never better), so only those few
are routed at full size, by the router they will execute with: the cost of a tick does not
grow with the number of orders that are nowhere near their price. Snipers are indexed by
the mint they wait for and fire when it launches. A trigger and a cancel race on one guarded
row update in PostgreSQL, so each order gets exactly one outcome.
"""

import logging
import time
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared import events, keys, queries
from shared.jobqueue import enqueue_order
from shared.market.router import RouteOptions, rate_bound, route_exact_in
from shared.market.routing import human_price
from shared.market.tokens import from_base_units
from shared.routewire import stored_options
from shared.rows import OrderRow, WaitingRow
from shared.sim.launches import token
from shared.sim.market import Market

log = logging.getLogger(__name__)

# Scores are floats; widen the candidate range so rounding never hides a fillable order (the
# exact comparison is done in Decimal afterwards).
_SCORE_SLACK = 1.000001


def _add_to_index(
    pipe: Pipeline,
    order_id: uuid.UUID,
    order_type: str,
    mint_in: str,
    mint_out: str,
    limit_price: Decimal | None,
) -> None:
    """Queue on `pipe` the writes that index one waiting order."""
    if order_type == "limit":
        assert limit_price is not None
        pipe.zadd(keys.limits_key(mint_in, mint_out), {str(order_id): float(limit_price)})
        pipe.sadd(keys.LIMIT_PAIRS, f"{mint_in}:{mint_out}")
    elif order_type == "sniper":
        pipe.sadd(keys.snipers_key(mint_out), str(order_id))


async def index_waiting(
    redis: ArqRedis,
    order_id: uuid.UUID,
    order_type: str,
    mint_in: str,
    mint_out: str,
    limit_price: Decimal | None,
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        _add_to_index(pipe, order_id, order_type, mint_in, mint_out, limit_price)
        await pipe.execute()


async def unindex(
    redis: ArqRedis, order_id: uuid.UUID, order_type: str, mint_in: str, mint_out: str
) -> None:
    if order_type == "limit":
        await redis.zrem(keys.limits_key(mint_in, mint_out), str(order_id))
    elif order_type == "sniper":
        await redis.srem(keys.snipers_key(mint_out), str(order_id))


async def retire(redis: ArqRedis, row: OrderRow | WaitingRow, event: dict[str, Any]) -> None:
    """A waiting order that ended (cancelled, expired): out of the index, then its event out.
    The end is committed already, so a failure here is only logged (a stale index entry is
    harmless: a trigger re-checks the row; a lost event is caught up from PostgreSQL)."""
    try:
        await unindex(redis, row.id, row.type, row.token_in, row.token_out)
        await events.publish(redis, event)
    except RedisError as exc:
        log.warning("order %s %s; its publish failed: %s", row.id, event["status"], exc)


async def rebuild_index(db: asyncpg.Pool, redis: ArqRedis) -> int:
    """Re-create the waiting index from PostgreSQL (after a restart or a Redis loss)."""
    async with db.acquire() as conn:
        rows = await queries.waiting_orders(conn)
    async with redis.pipeline(transaction=False) as pipe:  # one round trip however many
        for r in rows:
            _add_to_index(pipe, r.id, r.type, r.token_in, r.token_out, r.limit_price)
        await pipe.execute()
    return len(rows)


async def _fire(db: asyncpg.Pool, redis: ArqRedis, order_id: uuid.UUID, reason: str) -> bool:
    async with db.acquire() as conn:
        claimed = await queries.claim_trigger(conn, order_id, reason)
    if claimed:
        await enqueue_order(redis, order_id)
        log.info("order %s triggered: %s", order_id, reason)
    return claimed


async def check_limits(db: asyncpg.Pool, redis: ArqRedis, market: Market) -> int:
    """Fire every limit order whose full-size best net quote reaches its limit; returns how many."""
    fired = 0
    for pair in await redis.smembers(keys.LIMIT_PAIRS):
        mint_in, mint_out = pair.decode().split(":")
        fired += await _check_pair(db, redis, market, mint_in, mint_out)
    return fired


async def _check_pair(
    db: asyncpg.Pool, redis: ArqRedis, market: Market, mint_in: str, mint_out: str
) -> int:
    token_in, token_out = await token(redis, mint_in), await token(redis, mint_out)
    if token_in is None or token_out is None:
        return 0
    # The widest options' pools: every order's own options can only use fewer of them.
    pools = await market.route_pools(mint_in, mint_out)
    rate = rate_bound(pools, mint_in, mint_out, RouteOptions())  # out per in, base units
    if not rate:
        return 0
    bound = float(rate.scaleb(token_in.decimals - token_out.decimals)) * _SCORE_SLACK
    key = keys.limits_key(mint_in, mint_out)
    candidates = [uuid.UUID(m.decode()) for m in await redis.zrangebyscore(key, "-inf", bound)]
    if not candidates:
        return 0
    async with db.acquire() as conn:
        rows = await queries.waiting_orders(conn, candidates)
    live = {r.id for r in rows}
    stale = [str(c) for c in candidates if c not in live]  # cancelled/expired/claimed meanwhile
    if stale:
        await redis.zrem(key, *stale)
    fired, now_ts = 0, int(time.time())
    for r in rows:
        amount = int(r.amount_in)
        # The same router the order will execute with, under its own route options.
        options = stored_options(r.payload)
        decision = route_exact_in(pools, token_in, token_out, amount, now_ts, options)
        if decision is None:
            continue
        price = human_price(token_in, token_out, amount, decision.plan.amount_out)
        if r.limit_price is not None and price >= r.limit_price:
            reason = (
                f"best net price {price} {token_out.symbol}/{token_in.symbol} for "
                f"{from_base_units(token_in, amount)} reached the limit {r.limit_price}"
            )
            # Out of the index first: a re-armed order indexes itself again, and must stay.
            await redis.zrem(key, str(r.id))
            if await _fire(db, redis, r.id, reason):
                fired += 1
    return fired


async def fire_snipers(db: asyncpg.Pool, redis: ArqRedis, mint: str, symbol: str) -> int:
    """Fire every sniper waiting for `mint`; called as soon as the launch exists."""
    fired = 0
    for member in await redis.smembers(keys.snipers_key(mint)):
        order_id = uuid.UUID(member.decode())
        if await _fire(db, redis, order_id, f"launch of {symbol} ({mint})"):
            fired += 1
        await redis.srem(keys.snipers_key(mint), member)
    return fired


async def expire_due(db: asyncpg.Pool, redis: ArqRedis) -> int:
    """Move waiting orders past their expiry to `expired`; returns how many."""
    async with db.acquire() as conn:
        due = await queries.due_to_expire(conn)
        expired = []
        for r in due:
            event = await queries.transition(
                conn,
                r.id,
                "expired",
                attempt=0,
                data={"reason": "expiresInSeconds elapsed"},
                allowed_from=("pending",),
                untriggered_only=True,
            )
            if event is not None:
                expired.append((r, event))
    for r, event in expired:
        await retire(redis, r, event)
    return len(expired)
