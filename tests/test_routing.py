"""Smart order routing through the running engine: split routes, routes through intermediate
tokens, exact-out orders, and the atomicity of a route's one transaction, with a real worker."""

import base64
import struct
import time
import uuid
from decimal import Decimal
from typing import Any

import orjson
from solders.transaction import VersionedTransaction

from shared import keys
from shared.market.pools import SLIPPAGE_ERRORS, VENUE_NAMES, Pool
from shared.market.router import RouteOptions
from shared.sim.cluster import Cluster
from shared.sim.market import Market
from shared.sim.programs import VENUE_PROGRAMS
from shared.sim.transactions import build_swap_transaction
from shared.sim.wallet import load_keypair
from tests.conftest import Stack, StackFactory
from tests.helpers import base_units, follow, listed
from worker.routing import swap_instructions

SOL, USDC = listed("SOL"), listed("USDC")


async def _quote(stack: Stack, **params: object) -> dict[str, Any]:
    """`/api/quotes` for the order these parameters make (booleans as true/false)."""
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    response = await stack.http.get("/api/quotes", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _run(stack: Stack, order: dict[str, Any]) -> list[dict[str, Any]]:
    accepted = await stack.submit(order)
    return await follow(accepted["wsUrl"])


async def _pools(stack: Stack, addresses: list[str]) -> dict[str, Pool]:
    market = Market(stack.redis, stack.settings)
    found = {a: await market.pool(a) for a in addresses}
    assert all(p is not None for p in found.values())
    return {a: p for a, p in found.items() if p is not None}


async def _versions(stack: Stack, addresses: list[str]) -> dict[str, int]:
    return {a: int(await stack.redis.get(keys.pool_version_key(a)) or -1) for a in addresses}


def _holdings(pool: Pool, mint: str) -> int:
    """How much of `mint` the pool holds."""
    state = pool.state.to_dict()
    if "reserve_a" in state:
        return int(state["reserve_a"] if state["mint_a"] == mint else state["reserve_b"])
    side = 0 if state["mint_x"] == mint else 1
    return sum(int(xy[side]) for xy in state["bins"].values())


def _swaps(tx_base64: str) -> list[tuple[str, str, bytes]]:
    """(program id, pool, data) of every venue instruction of a signed transaction, in order."""
    tx = VersionedTransaction.from_bytes(base64.b64decode(tx_base64))
    account_keys = [str(k) for k in tx.message.account_keys]
    return [
        (account_keys[ix.program_id_index], account_keys[bytes(ix.accounts)[0]], bytes(ix.data))
        for ix in tx.message.instructions
        if account_keys[ix.program_id_index] in VENUE_PROGRAMS
    ]


def _by_status(events: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return next(e for e in events if e["status"] == status)


async def _check_fills(stack: Stack, confirmed: dict[str, Any], before: dict[str, Pool]) -> None:
    """Every leg's fill moved its pool by exactly its amounts, once."""
    after = await _pools(stack, list(before))
    for fill in confirmed["fills"]:
        t_in, t_out = listed(fill["tokenIn"]), listed(fill["tokenOut"])
        old, new = before[fill["pool"]], after[fill["pool"]]
        assert new.version == old.version + 1
        assert _holdings(new, t_in.mint) - _holdings(old, t_in.mint) == base_units(
            t_in, fill["amountIn"]
        )
        assert _holdings(old, t_out.mint) - _holdings(new, t_out.mint) == base_units(
            t_out, fill["amountOut"]
        )


# --- splits ---------------------------------------------------------------------------------------


async def test_a_large_order_executes_as_a_split_with_per_leg_fills(stack: Stack) -> None:
    order: dict[str, Any] = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "2000"}
    order["slippageBps"] = 100
    quote = await _quote(stack, **order, onlyDirectRoutes=True)
    legs = quote["routePlan"]
    assert len(legs) >= 2 and {(leg["tokenIn"], leg["tokenOut"]) for leg in legs} == {
        ("SOL", "USDC")
    }
    assert Decimal(quote["improvementBps"]) > 0 and "split over" in quote["reason"]
    assert sum((Decimal(leg["amountIn"]) for leg in legs), Decimal(0)) == 2000
    # Each leg's share, rounded to 0.01: they add up to 100 within that rounding.
    shares = sum((Decimal(leg["percent"]) for leg in legs), Decimal(0))
    assert abs(shares - 100) <= Decimal("0.01") * len(legs)
    before = await _pools(stack, [leg["pool"] for leg in legs])

    events = await _run(stack, order | {"onlyDirectRoutes": True})
    assert [e["status"] for e in events][-1] == "confirmed", events[-1]
    routing, building, confirmed = (
        _by_status(events, s) for s in ("routing", "building", "confirmed")
    )
    assert [leg["pool"] for leg in routing["routePlan"]] == [leg["pool"] for leg in legs]
    assert routing["bestSingle"]["pool"] in {leg["pool"] for leg in legs}
    assert building["legs"] == len(legs) and building["computeUnitLimit"] > 200_000

    # One transaction, one instruction per leg to its venue's program and pool.
    detail = (await stack.http.get(f"/api/orders/{events[0]['orderId']}")).json()
    swaps = _swaps(detail["signedTransaction"])
    assert [(VENUE_PROGRAMS[p], pool) for p, pool, _ in swaps] == [
        (leg["dex"], leg["pool"]) for leg in legs
    ]
    spent = [struct.unpack("<QQ", data[-16:])[0] for _, _, data in swaps]
    assert spent == [base_units(SOL, leg["amountIn"]) for leg in legs]

    fills = confirmed["fills"]
    assert [f["pool"] for f in fills] == [leg["pool"] for leg in legs]
    assert sum(base_units(USDC, f["amountOut"]) for f in fills) == base_units(
        USDC, confirmed["amountOut"]
    )
    assert base_units(USDC, confirmed["amountOut"]) >= base_units(USDC, building["minAmountOut"])
    assert Decimal(confirmed["amountIn"]) == 2000
    await _check_fills(stack, confirmed, before)


async def test_small_orders_take_one_pool_and_max_splits_1_never_splits(stack: Stack) -> None:
    small = await _quote(stack, tokenIn="SOL", tokenOut="USDC", amountIn="0.01")
    hops = {(leg["tokenIn"], leg["tokenOut"]) for leg in small["routePlan"]}
    assert len(small["routePlan"]) == len(hops)  # one pool per hop: no hop is split
    assert all(leg["percent"] == "100" for leg in small["routePlan"])
    large = await _quote(
        stack, tokenIn="SOL", tokenOut="USDC", amountIn="2000", maxSplits="1", maxHops="0"
    )
    assert len(large["routePlan"]) == 1
    assert large["routePlan"][0]["pool"] == large["bestSingle"]["pool"]
    assert large["improvementBps"] == "0"
    meteora = await _quote(stack, tokenIn="SOL", tokenOut="USDC", amountIn="2000", dexes="meteora")
    assert {leg["dex"] for leg in meteora["routePlan"]} == {"meteora"}
    assert [q["dex"] for q in meteora["quotes"]] == ["meteora"]


# --- intermediate tokens --------------------------------------------------------------------------


async def test_a_pair_without_a_pool_trades_through_intermediate_tokens(stack: Stack) -> None:
    order = {"tokenIn": "BTC", "tokenOut": "BONK", "amountIn": "0.5", "slippageBps": 100}
    refused = await stack.http.post("/api/orders/execute", json=order | {"maxHops": 1})
    assert refused.status_code == 400 and refused.json()["details"][0]["field"] == "maxHops"

    events = await _run(stack, order)
    assert events[-1]["status"] == "confirmed", events[-1]
    routing, confirmed = _by_status(events, "routing"), events[-1]
    legs = routing["routePlan"]
    path = list(dict.fromkeys([legs[0]["tokenIn"], *(leg["tokenOut"] for leg in legs)]))
    assert path[0] == "BTC" and path[-1] == "BONK" and len(path) == 4, legs
    assert set(path[1:-1]) <= {"SOL", "USDC", "USDT"}
    assert routing["bestSingle"] is None and routing["quotes"] == []
    assert routing["improvementBps"] == "0" and "through" in routing["reason"]
    # Each hop spends what the hop before it is sure to deliver, and no more.
    fills = confirmed["fills"]
    assert len(fills) == len(legs)
    for token in path[1:-1]:
        delivered = sum(Decimal(f["amountOut"]) for f in fills if f["tokenOut"] == token)
        spent = sum(Decimal(f["amountIn"]) for f in fills if f["tokenIn"] == token)
        assert Decimal(0) <= delivered - spent <= delivered * Decimal("0.0011")
    assert Decimal(confirmed["amountOut"]) >= Decimal(
        _by_status(events, "building")["minAmountOut"]
    )
    assert await _versions(stack, [f["pool"] for f in fills]) == dict.fromkeys(
        (f["pool"] for f in fills), 1
    )


async def test_a_two_hop_order_confirms(stack: Stack) -> None:
    # BONK trades against SOL only; SOL against USDC: BONK -> SOL -> USDC when direct only
    # would leave the order with no route, and at least as good as any direct pool otherwise.
    order = {"tokenIn": "BONK", "tokenOut": "USDC", "amountIn": "100000000", "maxHops": 1}
    events = await _run(stack, order)
    assert events[-1]["status"] == "confirmed", events[-1]
    legs = _by_status(events, "routing")["routePlan"]
    assert legs[0]["tokenIn"] == "BONK" and legs[-1]["tokenOut"] == "USDC"
    assert {leg["tokenOut"] for leg in legs if leg["tokenIn"] == "BONK"} == {"SOL"}
    assert [f["pool"] for f in events[-1]["fills"]] == [leg["pool"] for leg in legs]


async def test_a_limit_order_fires_and_executes_through_the_same_router(stack: Stack) -> None:
    quote = await _quote(stack, tokenIn="BTC", tokenOut="BONK", amountIn="0.1")
    price = Decimal(quote["amountOut"]) / Decimal(quote["amountIn"])
    limit = (price * Decimal("0.999")).quantize(Decimal(1))  # reachable now, by the route only
    accepted = await stack.submit(
        {"type": "limit", "tokenIn": "BTC", "tokenOut": "BONK", "amountIn": "0.1"}
        | {"limitPrice": str(limit), "slippageBps": 100}
    )
    events = await follow(accepted["wsUrl"])
    assert events[-1]["status"] == "confirmed", events[-1]
    routing = _by_status(events, "routing")
    assert "reached the limit" in routing["trigger"]
    assert len(routing["routePlan"]) >= 3 and routing["bestSingle"] is None
    assert Decimal(events[-1]["executedPrice"]) >= limit


# --- exact-out ------------------------------------------------------------------------------------


async def test_an_exact_out_order_receives_exactly_the_amount(stack: Stack) -> None:
    order = {"tokenIn": "SOL", "tokenOut": "USDC", "amountOut": "1500", "slippageBps": 50}
    quote = await _quote(stack, **order)
    assert quote["swapMode"] == "ExactOut" and quote["amountOut"] == "1500"
    most = base_units(SOL, quote["amountIn"]) * 10_050 // 10_000
    assert base_units(SOL, quote["maxAmountIn"]) <= most

    accepted = await stack.submit(order)
    pending = await stack.http.get(f"/api/orders/{accepted['orderId']}")
    assert pending.json()["swapMode"] == "ExactOut" and pending.json()["exactAmountOut"] == "1500"
    events = await follow(accepted["wsUrl"])
    confirmed = events[-1]
    assert confirmed["status"] == "confirmed", confirmed
    assert confirmed["amountOut"] == "1500"
    building = _by_status(events, "building")
    assert base_units(SOL, confirmed["amountIn"]) <= base_units(SOL, building["maxAmountIn"])
    detail = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    assert (detail["amountOut"], detail["amountIn"]) == ("1500", confirmed["amountIn"])
    # Exact-out instructions: each names its exact output and the most it may spend.
    for (program, pool, data), leg in zip(
        _swaps(detail["signedTransaction"]), confirmed["fills"], strict=True
    ):
        assert pool == leg["pool"] and VENUE_PROGRAMS[program] == leg["dex"]
        max_in, out = struct.unpack("<QQ", data[-16:])
        assert out == base_units(USDC, leg["amountOut"]) and max_in >= base_units(
            SOL, leg["amountIn"]
        )


async def test_a_large_exact_out_order_splits_and_still_receives_exactly(stack: Stack) -> None:
    order = {"tokenIn": "SOL", "tokenOut": "USDC", "amountOut": "300000", "slippageBps": 100}
    quote = await _quote(stack, **order)
    assert len(quote["routePlan"]) >= 2 and Decimal(quote["improvementBps"]) > 0
    before = await _pools(stack, [leg["pool"] for leg in quote["routePlan"]])
    events = await _run(stack, order)
    confirmed = events[-1]
    assert confirmed["status"] == "confirmed", confirmed
    assert confirmed["amountOut"] == "300000"
    assert sum(Decimal(f["amountOut"]) for f in confirmed["fills"]) == 300000
    await _check_fills(stack, confirmed, before)


# --- one route, one atomic transaction ------------------------------------------------------------


async def test_a_leg_whose_pool_moved_fails_the_whole_route_which_is_retried_whole(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(workers=0)
    order = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "2000", "onlyDirectRoutes": True}
    accepted = await stack.submit(order)
    order_id = uuid.UUID(accepted["orderId"])

    # A first attempt as a worker makes it: route, sign, record `building`, send...
    market = Market(stack.redis, stack.settings)
    cluster = Cluster(stack.redis, market, stack.settings)
    decision = await market.route(SOL, USDC, base_units(SOL, "2000"), RouteOptions(max_hops=0))
    assert decision is not None and len(decision.plan.legs) >= 2
    keypair = load_keypair(stack.settings)
    swaps = swap_instructions(decision.plan, str(keypair.pubkey()), 1, 0)  # a 1 bp guard
    blockhash, lvbh = await cluster.latest_blockhash()
    signed = build_swap_transaction(keypair, swaps, blockhash, 50_000, f"oee:{order_id}:1")
    dex = decision.plan.main_leg.dex
    await stack.record_first_attempt(
        order_id, signed, lvbh, {"chosen": dex}, {"dex_chosen": dex}, {"txHash": signed.signature}
    )

    # ... but before it lands, someone else's fill moves the last leg's pool against it.
    moved = decision.plan.legs[-1]
    pool = await market.pool(moved.pool.address)
    assert pool is not None
    pushed, _ = pool.swap(SOL.mint, moved.amount_in, int(time.time()))
    assert await market.write_pool(pushed, pool.version)
    versions = await _versions(stack, [leg.pool.address for leg in decision.plan.legs])
    await cluster.send_transaction(signed.raw, lvbh)
    record = orjson.loads(await stack.redis.get(keys.signature_key(signed.signature)))
    assert record["err"] == SLIPPAGE_ERRORS[moved.dex] and record["venue"] == moved.dex
    assert record["failedLeg"] == len(decision.plan.legs) - 1
    # No leg executed, not even those whose pools did not move.
    assert await _versions(stack, list(versions)) == versions

    # A worker finds the failed transaction and routes the whole order again.
    await stack.requeue(order_id)
    await stack.start_worker()
    events = await follow(accepted["wsUrl"])
    statuses = [(e["status"], e["attempt"]) for e in events]
    assert statuses[:3] == [("pending", 0), ("routing", 1), ("building", 1)]
    assert statuses[3:] == [("routing", 2), ("building", 2), ("submitted", 2), ("confirmed", 2)]
    retry = events[3]
    assert retry["retryOf"]["code"] == "SLIPPAGE_EXCEEDED"
    assert VENUE_NAMES[moved.dex] in retry["retryOf"]["error"]
    assert events[-1]["txHash"] != signed.signature
    assert len(events[-1]["fills"]) == len(retry["routePlan"])
