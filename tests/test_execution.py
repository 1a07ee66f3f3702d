"""The simulated market through the running engine: quotes, fills, slippage, retries, signed
transactions, routing, permanent and transient failures, and crash recovery."""

import asyncio
import base64
import random
import struct
import time
import uuid
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from typing import Any

import orjson
import pytest
from solders.transaction import VersionedTransaction

from shared import keys
from shared.market.meteora import METEORA_DLMM, DlmmPool, bin_price, dlmm_fee_rate
from shared.market.pools import SLIPPAGE_ERRORS, Pool
from shared.market.raydium import RAYDIUM_AMM_V4, RAYDIUM_CPMM, CpPool
from shared.market.router import RouteOptions
from shared.market.tokens import PAIRS, Token, from_base_units
from shared.market.types import InsufficientLiquidity
from shared.sim.cluster import Cluster
from shared.sim.market import Market
from shared.sim.programs import SwapInstruction
from shared.sim.transactions import build_swap_transaction
from shared.sim.wallet import load_keypair
from tests.conftest import Stack, StackFactory
from tests.helpers import base_units, follow, listed

VENUE_PROGRAMS = {RAYDIUM_AMM_V4, RAYDIUM_CPMM, METEORA_DLMM}


SOL, USDC = listed("SOL"), listed("USDC")


async def _quote(stack: Stack, token_in: str, token_out: str, amount: str) -> dict[str, Any]:
    response = await stack.http.get(
        "/api/quotes", params={"tokenIn": token_in, "tokenOut": token_out, "amountIn": amount}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _by_dex(quote: dict[str, Any]) -> dict[str, dict[str, Any]]:
    venues = {q["dex"]: q for q in quote["quotes"]}
    assert len(venues) == len(quote["quotes"])
    return venues


async def _order(stack: Stack, order_id: str) -> dict[str, Any]:
    response = await stack.http.get(f"/api/orders/{order_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _versions(stack: Stack, a: Token, b: Token) -> dict[str, int]:
    pools = await Market(stack.redis, stack.settings).pools(a.mint, b.mint)
    return {p.address: int(await stack.redis.get(keys.pool_version_key(p.address))) for p in pools}


async def _signature_keys(stack: Stack) -> list[str]:
    pattern = keys.signature_key("*")
    return sorted([k.decode() async for k in stack.redis.scan_iter(match=pattern)])


def _statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in events]


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00"))


# --- quotes are the venues' real math -------------------------------------------------------------


def _raydium_by_hand(pool: CpPool, mint_in: str, amount_in: int) -> int:
    """Constant product, fee taken from the input and rounded up, output rounded down."""
    fee_bps = 25 if pool.program_id == RAYDIUM_AMM_V4 else pool.fee_bps
    fee = -(-amount_in * fee_bps // 10_000)
    net = amount_in - fee
    r_in, r_out = (
        (pool.reserve_a, pool.reserve_b)
        if mint_in == pool.mint_a
        else (pool.reserve_b, pool.reserve_a)
    )
    return r_out * net // (r_in + net)


def _meteora_by_hand(pool: DlmmPool, mint_in: str, amount_in: int) -> int:
    """Inside the active bin: constant sum at the bin's price, after the fee (rounded up)."""
    fee = -(-amount_in * dlmm_fee_rate(pool) // 1_000_000_000)
    price = Fraction(bin_price(pool.bin_step, pool.active_id))  # y per x, exactly
    x_to_y = mint_in == pool.mint_x
    out = (amount_in - fee) * (price if x_to_y else 1 / price)
    reserve_x, reserve_y = pool.bins[pool.active_id]
    assert out <= (reserve_y if x_to_y else reserve_x), "example must stay inside the active bin"
    return int(out)  # floor: out is positive


@pytest.mark.parametrize(
    ("token_in", "token_out", "amount"),
    [(SOL, USDC, "1"), (USDC, SOL, "250"), (SOL, USDC, "37.5")],
    ids=["1-SOL-USDC", "250-USDC-SOL", "37.5-SOL-USDC"],
)
async def test_each_venues_quote_equals_the_hand_computed_example(
    stack: Stack, token_in: Token, token_out: Token, amount: str
) -> None:
    amount_in = base_units(token_in, amount)
    pools = await Market(stack.redis, stack.settings).pools(token_in.mint, token_out.mint)
    raydium = {
        p.address: _raydium_by_hand(p.state, token_in.mint, amount_in)
        for p in pools
        if isinstance(p.state, CpPool)
    }
    meteora = {
        p.address: _meteora_by_hand(p.state, token_in.mint, amount_in)
        for p in pools
        if isinstance(p.state, DlmmPool)
    }
    amm_v4 = [p for p in pools if p.program_id == RAYDIUM_AMM_V4]
    assert len(raydium) == 2 and len(meteora) == 1 and len(amm_v4) == 1
    assert isinstance(amm_v4[0].state, CpPool) and amm_v4[0].state.fee_bps == 25

    venues = _by_dex(await _quote(stack, token_in.symbol, token_out.symbol, amount))
    best_raydium = max(raydium, key=lambda address: raydium[address])
    assert venues["raydium"]["pool"] == best_raydium
    assert base_units(token_out, venues["raydium"]["amountOut"]) == raydium[best_raydium]
    (dlmm_address,) = meteora
    assert venues["meteora"]["pool"] == dlmm_address
    assert base_units(token_out, venues["meteora"]["amountOut"]) == meteora[dlmm_address]


async def test_a_large_order_moves_the_pool_it_fills(stack: Stack) -> None:
    before = _by_dex(await _quote(stack, "SOL", "USDC", "1"))
    # One pool only (splits and intermediate tokens have their own tests, test_routing.py).
    accepted = await stack.submit(
        {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "2000", "slippageBps": 100}
        | {"onlyDirectRoutes": True, "maxSplits": 1}
    )
    events = await follow(accepted["wsUrl"])
    assert events[-1]["status"] == "confirmed", events[-1]
    filled_dex = events[-1]["dex"]
    filled_pool = (await _order(stack, accepted["orderId"]))["pool"]

    after = _by_dex(await _quote(stack, "SOL", "USDC", "1"))
    other_dex = next(d for d in before if d != filled_dex)
    assert Decimal(after[filled_dex]["amountOut"]) < Decimal(before[filled_dex]["amountOut"])
    assert after[other_dex]["amountOut"] == before[other_dex]["amountOut"]  # untouched
    versions = await _versions(stack, SOL, USDC)
    assert versions.pop(filled_pool) == 1
    assert set(versions.values()) == {0}


# --- slippage after a price move, and the retry that re-quotes -----------------------------------


async def test_price_move_before_landing_fails_with_the_venues_error_and_retries(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(sim_tick_ms=5, sim_latency_scale=0.2)
    # Several orders on the same pool at once: the first fill moves the price against the rest,
    # on top of the market ticking every 5 ms, so a 1 bp tolerance cannot hold for them all.
    accepted = [
        await stack.submit(
            {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "200", "slippageBps": 1}
        )
        for _ in range(4)
    ]
    followed = await asyncio.gather(*(follow(a["wsUrl"], timeout_s=20) for a in accepted))

    retried = 0
    for events in followed:
        routing = [e for e in events if e["status"] == "routing"]
        submitted = {e["attempt"]: e["txHash"] for e in events if e["status"] == "submitted"}
        attempts = [e["attempt"] for e in routing]
        assert attempts == list(range(1, len(routing) + 1))
        assert sorted(submitted) == attempts
        final = events[-1]
        if final["status"] == "confirmed":
            failed_attempts = attempts[:-1]
            assert final["txHash"] == submitted[attempts[-1]]
        else:
            assert final["status"] == "failed", final
            assert (final["code"], final["retryable"], final["attempts"]) == (
                "SLIPPAGE_EXCEEDED",
                True,
                3,
            )
            assert final["attempt"] == 3
            failed_attempts = attempts
        for event in routing:
            attempt = event["attempt"]
            if attempt in failed_attempts:
                raw = await stack.redis.get(keys.signature_key(submitted[attempt]))
                assert raw is not None
                record = orjson.loads(raw)  # the venue of the leg that failed, and its error
                assert record["venue"] in {leg["dex"] for leg in event["routePlan"]}
                assert record["err"] == SLIPPAGE_ERRORS[record["venue"]]
            if attempt > 1:
                assert event["retryOf"]["code"] == "SLIPPAGE_EXCEEDED"
                assert len(event["quotes"]) == 2  # both venues quoted again
        retried += len(routing) > 1
    assert retried >= 1


# --- signed transactions --------------------------------------------------------------------------


async def test_every_confirmed_tx_hash_is_a_verifiable_signature_of_the_engine(
    stack: Stack,
) -> None:
    orders = [
        ("SOL", "USDC", "1.5"),
        ("USDC", "SOL", "120"),
        ("ETH", "USDC", "0.25"),
        ("BONK", "SOL", "2500000"),
        ("JUP", "USDC", "40"),
    ]
    accepted = [
        await stack.submit({"tokenIn": i, "tokenOut": o, "amountIn": a}) for i, o, a in orders
    ]
    await asyncio.gather(*(follow(a["wsUrl"]) for a in accepted))

    signers = set()
    for (token_in, out, amount), order in zip(orders, accepted, strict=True):
        detail = await _order(stack, order["orderId"])
        assert detail["status"] == "confirmed", detail
        tx = VersionedTransaction.from_bytes(base64.b64decode(detail["signedTransaction"]))
        assert str(tx.signatures[0]) == detail["txHash"]
        assert tx.verify_with_results() == [True]
        assert str(tx.message.account_keys[0]) == detail["signer"]
        signers.add(detail["signer"])
        # The signed swaps are the route the order describes: its legs' pools, in order, the
        # whole input spent by the first hop, and last-hop minimums that add up to the order's.
        routing = next(e for e in detail["events"] if e["status"] == "routing")
        legs = routing["routePlan"]
        account_keys = [str(k) for k in tx.message.account_keys]
        swaps = [
            ix
            for ix in tx.message.instructions
            if account_keys[ix.program_id_index] in VENUE_PROGRAMS
        ]
        assert [account_keys[bytes(ix.accounts)[0]] for ix in swaps] == [
            leg["pool"] for leg in legs
        ]
        amounts = [struct.unpack("<QQ", bytes(ix.data)[-16:]) for ix in swaps]
        spent = [a for (a, _), leg in zip(amounts, legs, strict=True) if leg["tokenIn"] == token_in]
        assert sum(spent) == base_units(listed(token_in), amount)
        final = [m for (_, m), leg in zip(amounts, legs, strict=True) if leg["tokenOut"] == out]
        assert sum(final) >= base_units(listed(out), detail["minAmountOut"])
        assert sum(final) - len(final) < base_units(listed(out), detail["minAmountOut"])
    assert signers == {str(load_keypair(stack.settings).pubkey())}


# --- routing --------------------------------------------------------------------------------------


def _human_amount(rng: random.Random, token: Token) -> str:
    """Between $10 and $100k worth of `token`, log-uniform."""
    usd = Decimal(10) ** Decimal(str(round(rng.uniform(1, 5), 3)))
    places = Decimal(1).scaleb(-min(token.decimals, 6))
    amount = (usd / token.ref_price_usd).quantize(places, rounding=ROUND_DOWN)
    assert amount > 0
    return str(amount)


def _best_output(pools: list[Pool], mint_in: str, amount_in: int) -> tuple[int, str]:
    outs: list[tuple[int, str]] = []
    for pool in pools:
        try:
            outs.append((pool.quote(mint_in, amount_in, int(time.time())).amount_out, pool.address))
        except InsufficientLiquidity:
            continue
    return max(outs)


async def test_pool_reads_asked_together_share_a_round_trip_and_see_earlier_writes(
    stack: Stack,
) -> None:
    """Concurrent orders quoting the same pair read its pools once, and a read asked for after
    a write sees it (that a read waits for the next flush rather than joining one in flight is
    `Coalescer`'s own test, in test_batching.py)."""
    market = Market(stack.redis, stack.settings)
    sol, usdc, bonk = SOL, USDC, listed("BONK")

    async def hvals_calls() -> int:
        return int((await stack.redis.info("commandstats"))["cmdstat_hvals"]["calls"])

    await market.pools(sol.mint, usdc.mint)
    before = await hvals_calls()
    *same, other = await asyncio.gather(
        *(market.pools(sol.mint, usdc.mint) for _ in range(5)), market.pools(bonk.mint, sol.mint)
    )
    assert await hvals_calls() == before + 2  # one per pair
    assert all(pools == same[0] for pools in same) and {p.address for p in other}.isdisjoint(
        p.address for p in same[0]
    )
    pool = same[0][0]
    moved, _ = pool.swap(sol.mint, 10**9, int(time.time()))
    version = int(await stack.redis.get(keys.pool_version_key(pool.address)))
    assert await market.write_pool(moved, version)
    after = {p.address: p for p in await market.pools(sol.mint, usdc.mint)}
    assert after[pool.address].state == moved.state


async def test_routing_picks_the_highest_net_output_in_random_trials(stack: Stack) -> None:
    rng = random.Random(2024)
    market = Market(stack.redis, stack.settings)
    amounts_usd: list[Decimal] = []
    for _ in range(40):
        base, quote = rng.choice(PAIRS)
        token_in, token_out = (
            (listed(base), listed(quote)) if rng.random() < 0.5 else (listed(quote), listed(base))
        )
        amount = _human_amount(rng, token_in)
        amounts_usd.append(Decimal(amount) * token_in.ref_price_usd)
        body = await _quote(stack, token_in.symbol, token_out.symbol, amount)

        venues = _by_dex(body)
        outs = {dex: base_units(token_out, q["amountOut"]) for dex, q in venues.items()}
        pools = await market.pools(token_in.mint, token_out.mint)
        best_out, best_pool = _best_output(pools, token_in.mint, base_units(token_in, amount))
        best_dex = max(outs, key=lambda dex: outs[dex])
        assert outs[best_dex] == best_out and venues[best_dex]["pool"] == best_pool, body
        # The route is that pool, or something that returns more (a split, a path through
        # SOL/USDC/USDT), and says by how much.
        single = body["bestSingle"]
        assert (single["pool"], single["amountOut"]) == (best_pool, venues[best_dex]["amountOut"])
        routed = base_units(token_out, body["amountOut"])
        assert routed >= best_out
        gain = Decimal(body["improvementBps"])
        assert gain == (Decimal((routed - best_out) * 10_000) / best_out).quantize(Decimal("0.01"))
        if [leg["pool"] for leg in body["routePlan"]] == [best_pool]:
            assert body["chosen"] == best_dex and gain == 0
    assert max(amounts_usd) / min(amounts_usd) > 1000  # the trials span the size range


# --- failures -------------------------------------------------------------------------------------


async def test_dust_order_no_venue_can_fill_fails_at_once(stack: Stack) -> None:
    # One base unit of BONK is worth a thousandth of a lamport: every pool returns nothing.
    accepted = await stack.submit({"tokenIn": "BONK", "tokenOut": "SOL", "amountIn": "0.00001"})
    events = await follow(accepted["wsUrl"])

    assert _statuses(events) == ["pending", "failed"]
    failed = events[-1]
    assert (failed["code"], failed["attempts"], failed["retryable"], failed["attempt"]) == (
        "INSUFFICIENT_LIQUIDITY",
        1,
        False,
        1,
    )
    detail = await _order(stack, accepted["orderId"])
    assert (detail["status"], detail["attempts"], detail["errorCode"]) == (
        "failed",
        1,
        "INSUFFICIENT_LIQUIDITY",
    )
    assert detail["txHash"] is None
    assert await _signature_keys(stack) == []


async def test_order_far_beyond_pool_liquidity_fails_at_once(stack: Stack) -> None:
    # 10 M SOL against pools holding ~$16 M in total.
    accepted = await stack.submit({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "10000000"})
    events = await follow(accepted["wsUrl"])

    final = events[-1]
    assert final["status"] == "failed", final
    assert (final["code"], final["attempts"], final["retryable"]) == (
        "INSUFFICIENT_LIQUIDITY",
        1,
        False,
    )
    assert all(e["attempt"] <= 1 for e in events)  # no retry
    assert set((await _versions(stack, SOL, USDC)).values()) == {0}  # nothing executed


@pytest.mark.parametrize("max_attempts", [3, 2])
async def test_transient_failures_retry_with_backoff_then_fail_with_the_reason(
    make_stack: StackFactory, max_attempts: int
) -> None:
    base_ms = 100
    stack = await make_stack(
        sim_expiry_rate=1.0, max_attempts=max_attempts, backoff_base_ms=base_ms
    )
    accepted = await stack.submit()
    events = await follow(accepted["wsUrl"])

    assert _statuses(events) == ["pending"] + ["routing", "building"] * max_attempts + ["failed"]
    routing = [e for e in events if e["status"] == "routing"]
    assert [e["attempt"] for e in routing] == list(range(1, max_attempts + 1))
    assert [e.get("retryOf", {}).get("code") for e in routing] == [None] + ["BLOCKHASH_EXPIRED"] * (
        max_attempts - 1
    )
    # Exponential backoff: attempt n+1 starts at least base * 2**(n-1) after attempt n failed.
    buildings = [e for e in events if e["status"] == "building"]
    for n, (building, retry) in enumerate(zip(buildings, routing[1:], strict=False), start=1):
        gap_s = (_at(retry) - _at(building)).total_seconds()
        assert gap_s >= base_ms * 2 ** (n - 1) / 1000 * 0.98, (n, gap_s)
    failed = events[-1]
    assert (failed["code"], failed["attempts"], failed["retryable"], failed["attempt"]) == (
        "BLOCKHASH_EXPIRED",
        max_attempts,
        True,
        max_attempts,
    )

    detail = await _order(stack, accepted["orderId"])
    assert detail["status"] == "failed"
    assert detail["attempts"] == max_attempts
    assert detail["errorCode"] == "BLOCKHASH_EXPIRED"
    assert detail["lastError"]
    assert await _signature_keys(stack) == []
    assert set((await _versions(stack, SOL, USDC)).values()) == {0}


# --- crash recovery -------------------------------------------------------------------------------


@pytest.mark.parametrize("sent_before_crash", [True, False], ids=["sent", "not-sent"])
async def test_recovery_after_a_crash_never_executes_twice(
    make_stack: StackFactory, sent_before_crash: bool
) -> None:
    stack = await make_stack(workers=0)
    amount_in = 3 * 10**9
    accepted = await stack.submit({"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "3"})
    order_id = uuid.UUID(accepted["orderId"])

    # What a worker does up to its crash: route, sign, record `building` + tx_pending, send.
    market = Market(stack.redis, stack.settings)
    cluster = Cluster(stack.redis, market, stack.settings)
    decision = await market.route(SOL, USDC, amount_in, RouteOptions(max_hops=0, max_splits=1))
    assert decision is not None
    chosen = decision.plan.main_leg
    keypair = load_keypair(stack.settings)
    min_out = decision.plan.min_amount_out(50)
    blockhash, lvbh = await cluster.latest_blockhash()
    swap = SwapInstruction(
        program_id=chosen.pool.program_id,
        pool=chosen.pool.address,
        owner=str(keypair.pubkey()),
        mint_in=SOL.mint,
        mint_out=USDC.mint,
        amount_in=amount_in,
        min_amount_out=min_out,
    )
    signed = build_swap_transaction(keypair, [swap], blockhash, 50_000, f"oee:{order_id}:1")
    routed, built = await stack.record_first_attempt(
        order_id,
        signed,
        lvbh,
        {"quotes": [], "chosen": chosen.dex, "reason": "set up by the test"},
        {"dex_chosen": chosen.dex, "pool": chosen.pool.address, "min_amount_out": min_out},
        {"dex": chosen.dex, "lastValidBlockHeight": lvbh},
    )
    assert routed["seq"] == 2 and built["seq"] == 3
    if sent_before_crash:
        await cluster.send_transaction(signed.raw, lvbh)
        assert (await _versions(stack, SOL, USDC))[chosen.pool.address] == 1

    # A fresh worker picks the order up again.
    await stack.requeue(order_id)
    await stack.start_worker()
    events = await follow(accepted["wsUrl"])

    assert _statuses(events) == ["pending", "routing", "building", "confirmed"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    confirmed = events[-1]
    assert confirmed["txHash"] == signed.signature
    versions = await _versions(stack, SOL, USDC)
    assert versions.pop(chosen.pool.address) == 1  # executed exactly once
    assert set(versions.values()) == {0}
    assert await _signature_keys(stack) == [keys.signature_key(signed.signature)]
    record = orjson.loads(await stack.redis.get(keys.signature_key(signed.signature)))
    assert record["err"] is None
    assert base_units(USDC, confirmed["amountOut"]) == record["amountOut"]
    detail = await _order(stack, accepted["orderId"])
    assert (detail["status"], detail["txHash"], detail["attempts"]) == (
        "confirmed",
        signed.signature,
        1,
    )
    assert from_base_units(USDC, record["amountOut"]) == Decimal(detail["amountOut"])
