"""Limit and sniper orders: waiting, triggering, expiry, cancel, launches, restarts."""

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from solders.keypair import Keypair

from shared import keys, queries
from shared.db import init_connection
from shared.numbers import dec_str
from tests.conftest import Stack, StackFactory
from tests.helpers import follow, wait_terminal


async def best_price(stack: Stack, token_in: str, token_out: str, amount: str) -> Decimal:
    quote = (
        await stack.http.get(
            "/api/quotes", params={"tokenIn": token_in, "tokenOut": token_out, "amountIn": amount}
        )
    ).json()
    # The route's price, as a limit order's trigger sees it (shared.triggers).
    return Decimal(quote["amountOut"]) / Decimal(quote["amountIn"])


async def lift_sol_price(stack: Stack, above: Decimal) -> dict[str, Any]:
    """Buy SOL with USDC until selling 1 SOL quotes at least `above`; returns the last buy."""
    for _ in range(12):
        accepted = await stack.submit(
            {"tokenIn": "USDC", "tokenOut": "SOL", "amountIn": "1500000", "slippageBps": 5000}
        )
        order = await wait_terminal(stack.http, accepted["orderId"])
        assert order["status"] == "confirmed", order
        if await best_price(stack, "SOL", "USDC", "1") >= above:
            return order
    raise AssertionError(f"the SOL price never reached {above}")


def limit_order(price: Decimal, **extra: Any) -> dict[str, Any]:
    return {
        "type": "limit",
        "tokenIn": "SOL",
        "tokenOut": "USDC",
        "amountIn": "1",
        "limitPrice": str(price),
        **extra,
    }


async def test_limit_order_waits_then_fills_once_the_price_crosses(stack: Stack) -> None:
    limit = (await best_price(stack, "SOL", "USDC", "1") * Decimal("1.01")).quantize(
        Decimal("0.01")
    )
    accepted = await stack.submit(limit_order(limit))
    detail = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    # Prices go out without trailing zeros (a limit of 303.50 reads 303.5), text included.
    assert detail["status"] == "pending" and detail["limitPrice"] == dec_str(limit)
    assert f"reach {dec_str(limit)} USDC" in detail["events"][0]["waiting"]
    assert await stack.redis.zscore(keys.limits_key(*_mints("SOL", "USDC")), accepted["orderId"])

    mover = await lift_sol_price(stack, limit)
    events = await follow(accepted["wsUrl"])
    assert [e["status"] for e in events] == [
        "pending",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    routing, confirmed = events[1], events[-1]
    assert "reached the limit" in routing["trigger"]
    assert routing["at"] > mover["updatedAt"]  # it fired only after the market moved past it
    assert Decimal(confirmed["executedPrice"]) >= limit
    assert Decimal(events[2]["minAmountOut"]) >= limit  # the transaction itself enforces the limit


async def test_limit_order_expires(stack: Stack) -> None:
    limit = await best_price(stack, "SOL", "USDC", "1") * 2
    accepted = await stack.submit(limit_order(limit.quantize(Decimal("0.01")), expiresInSeconds=1))
    events = await follow(accepted["wsUrl"], timeout_s=15)
    assert [e["status"] for e in events] == ["pending", "expired"]
    assert not await stack.redis.zscore(
        keys.limits_key(*_mints("SOL", "USDC")), accepted["orderId"]
    )


async def test_cancel_a_waiting_order_and_what_cannot_be_cancelled(stack: Stack) -> None:
    limit = (await best_price(stack, "SOL", "USDC", "1") * 2).quantize(Decimal("0.01"))
    accepted = await stack.submit(limit_order(limit))
    oid = accepted["orderId"]
    cancelled = await stack.http.delete(f"/api/orders/{oid}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert [e["status"] for e in await follow(accepted["wsUrl"])] == ["pending", "cancelled"]
    again = await stack.http.post(f"/api/orders/{oid}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "CONFLICT"

    market = await stack.submit()
    refused = await stack.http.delete(f"/api/orders/{market['orderId']}")
    assert refused.status_code == 409
    await wait_terminal(stack.http, market["orderId"])
    assert (await stack.http.delete(f"/api/orders/{uuid.uuid4()}")).status_code == 404


async def test_trigger_and_cancel_race_has_exactly_one_winner(
    stack: Stack, db: asyncpg.Connection, database_url: str
) -> None:
    """At the database: a claim and a cancel on the same waiting order, 30 times over."""
    other = await asyncpg.connect(database_url)
    await init_connection(other)
    try:
        for _ in range(30):
            limit = (await best_price(stack, "SOL", "USDC", "1") * 2).quantize(Decimal("0.01"))
            oid = uuid.UUID((await stack.submit(limit_order(limit)))["orderId"])
            claimed, cancelled = await asyncio.gather(
                queries.claim_trigger(db, oid, "race"),
                queries.transition(
                    other,
                    oid,
                    "cancelled",
                    attempt=0,
                    data={},
                    allowed_from=("pending",),
                    untriggered_only=True,
                ),
            )
            assert claimed != (cancelled is not None), (claimed, cancelled)
    finally:
        await other.close()


async def test_cancel_racing_real_triggers_gives_one_outcome_per_order(stack: Stack) -> None:
    limit = (await best_price(stack, "SOL", "USDC", "1") * Decimal("1.005")).quantize(
        Decimal("0.01")
    )
    orders = [await stack.submit(limit_order(limit)) for _ in range(12)]
    mover = asyncio.create_task(lift_sol_price(stack, limit))
    cancels = await asyncio.gather(
        *(stack.http.delete(f"/api/orders/{o['orderId']}") for o in orders)
    )
    await mover
    for order, cancel in zip(orders, cancels, strict=True):
        events = await follow(order["wsUrl"])
        statuses = [e["status"] for e in events]
        if cancel.status_code == 200:
            assert statuses == ["pending", "cancelled"]
        else:
            assert cancel.status_code == 409, cancel.text
            assert "cancelled" not in statuses and statuses[-1] in ("confirmed", "failed")


def _mints(*symbols: str) -> tuple[str, ...]:
    from shared.market.tokens import resolve_token

    return tuple(resolve_token(s).mint for s in symbols)  # type: ignore[union-attr]


async def test_snipers_fire_on_launch_in_order_at_worsening_prices(
    stack: Stack, db: asyncpg.Connection
) -> None:
    mint = str(Keypair().pubkey())
    snipers = [
        await stack.submit(
            {
                "type": "sniper",
                "tokenIn": "SOL",
                "tokenOut": mint,
                "amountIn": "2",
                "slippageBps": 5000,
            }
        )
        for _ in range(4)
    ]
    # A guard below the launch price can never be met: that one must fail with the slippage error.
    guarded = await stack.submit(
        {
            "type": "sniper",
            "tokenIn": "SOL",
            "tokenOut": mint,
            "amountIn": "1",
            "maxPrice": "0.0000005",
            "slippageBps": 100,
        }
    )
    launch = await stack.http.post(
        "/api/sim/launches", json={"mint": mint, "symbol": "MOON", "liquiditySol": "50"}
    )
    assert launch.status_code == 201, launch.text
    assert launch.json()["snipersTriggered"] == 5
    results = [await wait_terminal(stack.http, s["orderId"]) for s in snipers]
    assert all(r["status"] == "confirmed" for r in results), [r["lastError"] for r in results]
    # Tokens per SOL: each fill moved the pool, so no two fills got the same price. (Fills in
    # one slot whose steps were committed in one batch share `updatedAt`, so the API does not
    # say which of them came first.)
    prices = [Decimal(r["executedPrice"]) for r in results]
    assert len(set(prices)) == len(prices), prices
    building = next(e for e in results[0]["events"] if e["status"] == "building")
    assert building["computeUnitPrice"] > 50_000  # snipers pay a higher priority fee

    failed = await wait_terminal(stack.http, guarded["orderId"])
    assert failed["status"] == "failed" and failed["errorCode"] == "SLIPPAGE_EXCEEDED"
    # Every sniper was claimed within one slot (400 ms) of the launch.
    rows = await db.fetch("SELECT triggered_at FROM orders WHERE type = 'sniper'")
    spread = max(r["triggered_at"] for r in rows) - min(r["triggered_at"] for r in rows)
    assert spread.total_seconds() < 0.4


async def test_sniper_validation(stack: Stack) -> None:
    listed = {"type": "sniper", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
    assert (await stack.http.post("/api/orders/execute", json=listed)).status_code == 400
    bad_mint = listed | {"tokenOut": "not-a-mint"}
    assert (await stack.http.post("/api/orders/execute", json=bad_mint)).status_code == 400
    no_limit = {"type": "limit", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
    assert (await stack.http.post("/api/orders/execute", json=no_limit)).status_code == 400
    launched = (await stack.http.post("/api/sim/launches", json={})).json()["mint"]
    late = listed | {"tokenOut": launched}
    assert (await stack.http.post("/api/orders/execute", json=late)).status_code == 400


async def test_waiting_orders_survive_a_worker_restart_and_lost_index(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    limit = (await best_price(stack, "SOL", "USDC", "1") * Decimal("1.01")).quantize(
        Decimal("0.01")
    )
    accepted = await stack.submit(limit_order(limit))
    await stack.stop_workers()
    await stack.redis.delete(keys.limits_key(*_mints("SOL", "USDC")), keys.LIMIT_PAIRS)
    await stack.start_worker()  # rebuilds the waiting set from PostgreSQL
    await lift_sol_price(stack, limit)
    events = await follow(accepted["wsUrl"])
    assert events[-1]["status"] == "confirmed"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "maxPrice": "1"},
        {
            "type": "limit",
            "tokenIn": "SOL",
            "tokenOut": "USDC",
            "amountIn": "1",
            "limitPrice": "-1",
        },
    ],
)
async def test_waiting_fields_are_validated(stack: Stack, body: dict[str, Any]) -> None:
    response = await stack.http.post("/api/orders/execute", json=body)
    assert response.status_code == 400 and response.json()["code"] == "VALIDATION_ERROR"


async def test_runs_spent_waiting_do_not_count_against_the_execution(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    """A limit order whose price hovers at its limit is triggered and re-armed again and
    again; each cycle is a job run. Those must not use up the run budget of its execution."""
    stack = await make_stack(max_runs=3)
    limit = (await best_price(stack, "SOL", "USDC", "1") * Decimal("1.01")).quantize(
        Decimal("0.01")
    )
    accepted = await stack.submit(limit_order(limit))
    # As if 20 trigger/re-arm cycles had happened while it waited.
    await db.execute("UPDATE orders SET runs = 20 WHERE id = $1", uuid.UUID(accepted["orderId"]))
    await lift_sol_price(stack, limit)
    events = await follow(accepted["wsUrl"])
    assert events[-1]["status"] == "confirmed", events[-1]
