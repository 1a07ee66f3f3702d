"""Raydium constant-product math: worked examples and invariants."""

import json
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.market.raydium import (
    CPMM_FEE_TIERS_BPS,
    RAYDIUM_AMM_V4,
    RAYDIUM_CPMM,
    CpPool,
    cp_new,
    cp_quote,
    cp_reprice,
    cp_spot_price,
    cp_swap,
)
from shared.market.types import InsufficientLiquidity

# 1000 SOL / 150_000 USDC in base units: spot 0.15 micro-USDC per lamport (150 USDC/SOL).
POOL = CpPool("pool", RAYDIUM_AMM_V4, "sol", "usdc", 1_000_000_000_000, 150_000_000_000, 25)


def test_worked_example_a_to_b() -> None:
    # fee = ceil(10_000_000_000 * 25 / 10_000) = 25_000_000; in' = 9_975_000_000
    # out = floor(150_000_000_000 * 9_975_000_000 / (1_000_000_000_000 + 9_975_000_000))
    #     = floor(1_496_250_000_000_000_000_000 / 1_009_975_000_000) = 1_481_472_313
    #       (1_009_975_000_000 * 1_481_472_313 = 1_496_249_999_322_175_000_000, remainder
    #        677_825_000_000 < divisor)
    new_pool, quote = cp_swap(POOL, True, 10_000_000_000)
    assert quote.fee_amount == 25_000_000
    assert quote.amount_out == 1_481_472_313
    assert quote.amount_in == 10_000_000_000
    assert quote.bins_crossed == 0
    # impact = 1 - 1_481_472_313 / (9_975_000_000 * 0.15) = 1 - 1_481_472_313 / 1_496_250_000
    #        = 14_777_687 / 1_496_250_000 = 0.98764825...%
    assert abs(quote.price_impact_pct - Decimal("0.987648253968")) < Decimal("1e-12")
    # The gross input, fee included, stays in the pool.
    assert new_pool.reserve_a == 1_010_000_000_000
    assert new_pool.reserve_b == 150_000_000_000 - 1_481_472_313


def test_worked_example_b_to_a() -> None:
    # fee = ceil(1_500_000_000 * 25 / 10_000) = 3_750_000 (exact); in' = 1_496_250_000
    # out = floor(10^12 * 1_496_250_000 / (150_000_000_000 + 1_496_250_000))
    #     = floor(1_496_250_000_000_000_000_000 / 151_496_250_000) = 9_876_482_091
    quote = cp_quote(POOL, False, 1_500_000_000)
    assert (quote.fee_amount, quote.amount_out) == (3_750_000, 9_876_482_091)


def test_fee_rounds_up() -> None:
    # 1001 * 25 / 10_000 = 2.5025 -> 3
    assert cp_quote(POOL, True, 1001).fee_amount == 3
    assert cp_quote(POOL, True, 400).fee_amount == 1  # exactly 1.0


def test_dust_and_invalid_amounts() -> None:
    with pytest.raises(ValueError):
        cp_quote(POOL, True, 0)
    with pytest.raises(ValueError):
        cp_quote(POOL, True, -5)
    # 1 lamport: fee ceil(0.0025) = 1 eats it all, nothing comes out.
    with pytest.raises(InsufficientLiquidity):
        cp_quote(POOL, True, 1)
    empty = CpPool("e", RAYDIUM_CPMM, "a", "b", 0, 1_000, 25)
    with pytest.raises(InsufficientLiquidity):
        cp_quote(empty, True, 10_000)


def test_invalid_pool_state_is_rejected() -> None:
    with pytest.raises(ValueError):
        CpPool("p", RAYDIUM_CPMM, "a", "b", -1, 1, 25)
    with pytest.raises(ValueError):
        CpPool("p", RAYDIUM_CPMM, "a", "b", 1, 1, 10_000)


def test_spot_price_and_new_pool() -> None:
    assert cp_spot_price(POOL, True) == Decimal("0.15")
    assert cp_spot_price(POOL, False) == 1 / Decimal("0.15")
    pool = cp_new("p", RAYDIUM_CPMM, "a", "b", 100, Decimal("0.15"), 150_000_000_000)
    assert (pool.reserve_a, pool.reserve_b, pool.fee_bps) == (
        1_000_000_000_000,
        150_000_000_000,
        100,
    )
    assert 100 in CPMM_FEE_TIERS_BPS


pools = st.builds(
    CpPool,
    address=st.just("p"),
    program_id=st.sampled_from([RAYDIUM_AMM_V4, RAYDIUM_CPMM]),
    mint_a=st.just("a"),
    mint_b=st.just("b"),
    reserve_a=st.integers(min_value=1, max_value=10**18),
    reserve_b=st.integers(min_value=1, max_value=10**18),
    fee_bps=st.sampled_from(CPMM_FEE_TIERS_BPS),
)
amounts = st.integers(min_value=1, max_value=10**20)


@settings(max_examples=300, deadline=None)
@given(pools, st.booleans(), amounts)
def test_swap_invariants(pool: CpPool, a_to_b: bool, amount_in: int) -> None:
    try:
        new_pool, quote = cp_swap(pool, a_to_b, amount_in)
    except InsufficientLiquidity:
        return
    reserve_out = pool.reserve_b if a_to_b else pool.reserve_a
    assert new_pool.reserve_a * new_pool.reserve_b >= pool.reserve_a * pool.reserve_b
    assert 0 < quote.amount_out < reserve_out
    assert quote.fee_amount >= 0
    assert quote.fee_amount * 10_000 >= amount_in * pool.fee_bps
    assert quote.price_impact_pct >= 0
    # Conservation: what went in is in the pool, what came out left it.
    assert new_pool.reserve_a + new_pool.reserve_b == (
        pool.reserve_a + pool.reserve_b + amount_in - quote.amount_out
    )


@settings(max_examples=300, deadline=None)
@given(pools, st.booleans(), amounts, amounts)
def test_output_is_monotone_in_input(pool: CpPool, a_to_b: bool, x: int, y: int) -> None:
    small, large = sorted((x, y))
    try:
        out_small = cp_quote(pool, a_to_b, small).amount_out
    except InsufficientLiquidity:
        out_small = 0
    try:
        out_large = cp_quote(pool, a_to_b, large).amount_out
    except InsufficientLiquidity:
        out_large = 0
    assert out_small <= out_large


@settings(max_examples=100, deadline=None)
@given(pools)
def test_dict_round_trip_through_json(pool: CpPool) -> None:
    data = json.loads(json.dumps(pool.to_dict()))
    assert CpPool.from_dict(data) == pool
    assert isinstance(data["reserve_a"], int)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=10**6, max_value=10**18),
    st.integers(min_value=10**6, max_value=10**18),
    st.decimals(min_value=Decimal("0.5"), max_value=Decimal("2"), places=4),
)
def test_reprice_hits_target_and_keeps_k(reserve_a: int, reserve_b: int, move: Decimal) -> None:
    pool = CpPool("p", RAYDIUM_CPMM, "a", "b", reserve_a, reserve_b, 25)
    target = cp_spot_price(pool, True) * move
    assume(Decimal(reserve_a * reserve_b).sqrt() * min(target, 1 / target).sqrt() > 10**5)
    moved = cp_reprice(pool, target)
    assert abs(cp_spot_price(moved, True) / target - 1) < Decimal("0.001")
    k_before = reserve_a * reserve_b
    k_after = moved.reserve_a * moved.reserve_b
    assert abs(Decimal(k_after) / Decimal(k_before) - 1) < Decimal("0.001")
