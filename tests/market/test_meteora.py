"""Meteora DLMM math: bin prices, dynamic fees, the bin walk, and pool construction."""

import json
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.market.meteora import (
    FEE_PRECISION,
    MAX_FEE_RATE,
    DlmmPool,
    bin_id_for_price,
    bin_price,
    dlmm_base_fee_rate,
    dlmm_fee_rate,
    dlmm_new,
    dlmm_quote,
    dlmm_reprice,
    dlmm_spot_price,
    dlmm_swap,
)
from shared.market.types import InsufficientLiquidity

NOW = 1_700_000_000


def _two_bin_pool() -> DlmmPool:
    return DlmmPool(
        address="d",
        mint_x="x",
        mint_y="y",
        bin_step=10,
        active_id=0,
        bins={0: (1_000, 1_000), -1: (0, 5_000)},
        base_factor=10_000,
    )


def test_worked_example_crosses_one_bin() -> None:
    pool = _two_bin_pool()
    # Last update at 0, so the references reset: v_ref = 0, i_ref = 0.
    # Bin 0, price 1: v_acc = 0, rate = base 10_000 * 10 * 10 = 1_000_000 (0.1 %).
    #   max_in = ceil(1_000 / 1) = 1_000; max_fee = ceil(1_000 * 1e6 / (1e9 - 1e6)) = 2.
    #   3_000 > 1_002, so the bin is drained: used 1_002, out 1_000, fee 2; 1_998 left.
    # Bin -1, price 1/1.001: v_acc = 0 + |0 - (-1)| * 10_000 = 10_000,
    #   variable = ceil(40_000 * (10_000 * 10)^2 / 1e11) = 4_000, rate = 1_004_000.
    #   max_in = ceil(5_000 * 1.001) = 5_005 > 1_998, so a partial fill:
    #   fee = ceil(1_998 * 1_004_000 / 1e9) = ceil(2.006) = 3; out = floor(1_995 / 1.001) = 1_993.
    new_pool, quote = dlmm_swap(pool, True, 3_000, NOW)
    assert (quote.amount_in, quote.amount_out, quote.fee_amount) == (3_000, 2_993, 5)
    assert quote.bins_crossed == 1
    # impact = 1 - 2_993 / (2_995 * 1) = 2 / 2_995
    assert abs(quote.price_impact_pct - Decimal(200) / Decimal(2_995)) < Decimal("1e-20")
    assert new_pool.bins == {0: (2_002, 0), -1: (1_998, 3_007)}
    assert new_pool.active_id == -1
    assert new_pool.volatility_accumulator == 10_000
    assert (new_pool.volatility_reference, new_pool.index_reference) == (0, 0)
    assert new_pool.last_update_ts == NOW
    # Quoting is the same computation without the state change.
    assert dlmm_quote(pool, True, 3_000, NOW) == quote


def test_worked_example_y_to_x_in_active_bin() -> None:
    # rate 1_000_000: fee = ceil(500 * 0.001) = 1; out = floor(499 / 1) = 499 x.
    new_pool, quote = dlmm_swap(_two_bin_pool(), False, 500, NOW)
    assert (quote.amount_out, quote.fee_amount, quote.bins_crossed) == (499, 1, 0)
    assert new_pool.bins[0] == (501, 1_500)


def test_bin_prices() -> None:
    assert bin_price(10, 0) == 1
    assert bin_price(10, 1) == Decimal("1.001")
    assert bin_price(25, 2) == Decimal("1.00500625")
    assert abs(bin_price(10, -1) * Decimal("1.001") - 1) < Decimal("1e-45")
    # SOL/USDC in base units: 150 USDC/SOL = 0.15 micro-USDC per lamport.
    sol_bin = bin_id_for_price(10, Decimal("0.15"))
    assert sol_bin == -1898
    assert abs(bin_price(10, sol_bin) / Decimal("0.15") - 1) < Decimal("0.0005")
    with pytest.raises(ValueError):
        bin_id_for_price(10, Decimal(0))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 5, 10, 20, 25, 100]), st.integers(min_value=-20_000, max_value=20_000))
def test_bin_id_for_price_inverts_bin_price(bin_step: int, bin_id: int) -> None:
    assert bin_id_for_price(bin_step, bin_price(bin_step, bin_id)) == bin_id


def test_fee_rates() -> None:
    pool = _two_bin_pool()
    assert dlmm_base_fee_rate(pool) == 1_000_000
    assert dlmm_fee_rate(pool) == 1_000_000
    # ceil(40_000 * (35 * 10_000 * 10)^2 / 1e11) = 4_900_000
    assert dlmm_fee_rate(pool, 350_000) == 1_000_000 + 4_900_000
    # Capped at 10 %.
    assert dlmm_fee_rate(pool, 10**7) == MAX_FEE_RATE
    default = dlmm_new("p", "x", "y", 10, Decimal("0.15"), 10**12)
    assert dlmm_base_fee_rate(default) == 2_000_000  # 0.20 %
    assert default.base_factor == 20_000


def test_references_decay_and_reset() -> None:
    pool, _ = dlmm_swap(_two_bin_pool(), True, 3_000, NOW)  # v_acc 10_000 at bin -1
    # Inside the filter period the reference stays: v_acc = 0 + |0 - (-1)| * 10_000.
    within, _ = dlmm_swap(pool, False, 100, NOW + 5)
    assert (within.index_reference, within.volatility_accumulator) == (0, 10_000)
    # Between filter and decay period: v_ref = 10_000 * 5_000 / 10_000, i_ref = active (-1).
    decayed, _ = dlmm_swap(pool, False, 100, NOW + 60)
    assert (decayed.volatility_reference, decayed.index_reference) == (5_000, -1)
    assert decayed.volatility_accumulator == 5_000
    # Past the decay period everything resets.
    reset, _ = dlmm_swap(pool, False, 100, NOW + 601)
    assert (reset.volatility_reference, reset.volatility_accumulator) == (0, 0)


def test_invalid_and_dust_amounts() -> None:
    pool = _two_bin_pool()
    with pytest.raises(ValueError):
        dlmm_quote(pool, True, 0, NOW)
    with pytest.raises(InsufficientLiquidity):
        dlmm_quote(pool, True, 1, NOW)  # the 1-unit fee takes all of it
    with pytest.raises(InsufficientLiquidity):
        dlmm_quote(pool, True, 1_000_000, NOW)
    assert dlmm_spot_price(pool, True) == 1
    # 1_002 y buys exactly the 1_000 x (fee ceil(1.002) = 2); one more unit has nowhere to go.
    with pytest.raises(InsufficientLiquidity):
        dlmm_quote(pool, False, 1_003, NOW)
    drained, quote = dlmm_swap(pool, False, 1_002, NOW)
    assert (quote.amount_out, drained.bins[0], drained.active_id) == (1_000, (0, 2_002), 0)
    with pytest.raises(InsufficientLiquidity):
        dlmm_spot_price(drained, False)


@st.composite
def pools(
    draw: st.DrawFn,
    bin_steps: tuple[int, ...] = (1, 5, 10, 20, 25, 100),
    min_each_side: int = 0,
    min_per_bin: int = 10**5,
) -> DlmmPool:
    bin_step = draw(st.sampled_from(bin_steps))
    mantissa = draw(st.integers(min_value=1, max_value=9_999))
    price = Decimal(mantissa).scaleb(draw(st.integers(min_value=-8, max_value=2)))
    each_side = draw(st.integers(min_value=min_each_side, max_value=40))
    # At least 10^5 base units of each token per bin, as any real pool has, so that rounding
    # stays far below the tolerances checked here.
    per_bin = draw(st.integers(min_value=min_per_bin, max_value=10**11))
    reserve_y = int(per_bin * max(price, Decimal(1))) * (2 * each_side + 1)
    return dlmm_new("p", "x", "y", bin_step, price, reserve_y, each_side)


def _totals(pool: DlmmPool) -> tuple[int, int]:
    return sum(x for x, _ in pool.bins.values()), sum(y for _, y in pool.bins.values())


def _size(pool: DlmmPool, x_to_y: bool, fraction: Decimal) -> int:
    """`fraction` of the pool's whole output side, expressed in the input token at spot."""
    total_x, total_y = _totals(pool)
    out_side = total_y if x_to_y else total_x
    return max(1, int(out_side * fraction / dlmm_spot_price(pool, x_to_y)))


fractions = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1.2"), places=6)


@settings(max_examples=200, deadline=None)
@given(pools(), st.booleans(), fractions)
def test_swap_conserves_tokens(pool: DlmmPool, x_to_y: bool, fraction: Decimal) -> None:
    amount_in = _size(pool, x_to_y, fraction)
    try:
        new_pool, quote = dlmm_swap(pool, x_to_y, amount_in, NOW)
    except InsufficientLiquidity:
        return
    (x0, y0), (x1, y1) = _totals(pool), _totals(new_pool)
    reserve_in, reserve_out, new_in, new_out = (x0, y0, x1, y1) if x_to_y else (y0, x0, y1, x1)
    assert reserve_in + amount_in == new_in
    assert reserve_out - quote.amount_out == new_out
    assert 0 < quote.amount_out <= reserve_out
    assert all(x >= 0 and y >= 0 for x, y in new_pool.bins.values())
    assert 0 <= quote.fee_amount < amount_in
    assert quote.price_impact_pct >= 0
    assert quote.bins_crossed == abs(new_pool.active_id - pool.active_id)


@settings(max_examples=150, deadline=None)
@given(pools(), st.booleans(), fractions, fractions)
def test_output_is_monotone_in_input(
    pool: DlmmPool, x_to_y: bool, f1: Decimal, f2: Decimal
) -> None:
    small, large = sorted((_size(pool, x_to_y, f1), _size(pool, x_to_y, f2)))
    try:
        out_large = dlmm_quote(pool, x_to_y, large, NOW).amount_out
    except InsufficientLiquidity:
        return
    try:
        out_small = dlmm_quote(pool, x_to_y, small, NOW).amount_out
    except InsufficientLiquidity:
        out_small = 0
    assert out_small <= out_large


@settings(max_examples=100, deadline=None)
@given(pools(), st.booleans())
def test_swap_larger_than_all_liquidity_raises(pool: DlmmPool, x_to_y: bool) -> None:
    out_index = 1 if x_to_y else 0
    # The dearest bin with output liquidity bounds the input needed to drain every bin.
    worst = min if x_to_y else max
    worst_id = worst(i for i, xy in pool.bins.items() if xy[out_index] > 0)
    worst_price = bin_price(pool.bin_step, worst_id)
    out_total = _totals(pool)[out_index]
    needed = out_total / worst_price if x_to_y else out_total * worst_price
    amount_in = int(needed * 2) + 2 * len(pool.bins) + 10  # fees are at most 10 %
    with pytest.raises(InsufficientLiquidity):
        dlmm_quote(pool, x_to_y, amount_in, NOW)


@settings(max_examples=100, deadline=None)
@given(
    pools(bin_steps=(10, 20, 25), min_each_side=5, min_per_bin=10**10),
    st.booleans(),
    st.decimals(min_value=Decimal("0.1"), max_value=Decimal("0.9"), places=3),
)
def test_recent_volatility_raises_the_fee(pool: DlmmPool, x_to_y: bool, fraction: Decimal) -> None:
    moved, big = dlmm_swap(pool, x_to_y, _size(pool, x_to_y, fraction), NOW)
    assume(big.bins_crossed >= 1)
    assert moved.volatility_accumulator > 0
    assert dlmm_fee_rate(moved) > dlmm_base_fee_rate(moved)
    # The same small trade a second later, inside the filter period, pays a higher rate than
    # it would have on the calm pool.
    small = _size(pool, x_to_y, Decimal("0.0001"))
    assume(small >= 10**6)
    calm = dlmm_quote(pool, x_to_y, small, NOW)
    after = dlmm_quote(moved, x_to_y, small, NOW + 1)
    assert after.fee_amount > calm.fee_amount
    # Every bin it touches charges at least the rate the big swap left behind.
    assert after.fee_amount * FEE_PRECISION >= small * dlmm_fee_rate(moved)


@settings(max_examples=100, deadline=None)
@given(pools(), st.booleans(), fractions)
def test_dict_round_trip_through_json(pool: DlmmPool, x_to_y: bool, fraction: Decimal) -> None:
    try:
        pool, _ = dlmm_swap(pool, x_to_y, _size(pool, x_to_y, fraction), NOW)
    except InsufficientLiquidity:
        pass
    data = json.loads(json.dumps(pool.to_dict()))
    assert DlmmPool.from_dict(data) == pool


@settings(max_examples=150, deadline=None)
@given(pools(), st.decimals(min_value=Decimal("0.5"), max_value=Decimal("2"), places=4))
def test_reprice_moves_spot_to_target_and_keeps_value(pool: DlmmPool, move: Decimal) -> None:
    target = bin_price(pool.bin_step, pool.active_id) * move
    moved = dlmm_reprice(pool, target, NOW)
    one_bin = Decimal(pool.bin_step) / 10_000
    assert abs(dlmm_spot_price(moved, True) / target - 1) <= one_bin
    assert len(moved.bins) == len(pool.bins)
    # Value in y at the new active price is kept, less rounding.
    price = bin_price(pool.bin_step, moved.active_id)
    (x0, y0), (x1, y1) = _totals(pool), _totals(moved)
    before, after = y0 + x0 * price, y1 + x1 * price
    assert abs(after / before - 1) < Decimal("0.001")
    assert moved.volatility_accumulator == pool.volatility_accumulator


def test_new_pool_layout() -> None:
    pool = dlmm_new("p", "x", "y", 10, Decimal("0.15"), 61_000_000, bins_each_side=30)
    per_bin = 2 * 61_000_000 // 61  # 2_000_000 y per full bin
    assert len(pool.bins) == 61
    assert all(pool.bins[pool.active_id - i] == (0, per_bin) for i in range(1, 31))
    assert all(pool.bins[pool.active_id + i][1] == 0 for i in range(1, 31))
    assert pool.bins[pool.active_id][1] == per_bin // 2
    assert _totals(pool)[1] == 30 * per_bin + per_bin // 2
    assert pool.index_reference == pool.active_id
    with pytest.raises(ValueError):
        dlmm_new("p", "x", "y", 10, Decimal("0.15"), 10, bins_each_side=30)


def test_active_bin_outside_the_liquidity_range() -> None:
    # y->x from below the bins walks up into them; x->y from there has nothing below.
    pool = DlmmPool("d", "x", "y", 10, -5, {0: (1_000, 1_000)}, 10_000)
    new_pool, quote = dlmm_swap(pool, False, 100, NOW)
    assert (new_pool.active_id, quote.bins_crossed, quote.amount_out) == (0, 5, 99)
    with pytest.raises(InsufficientLiquidity):
        dlmm_quote(pool, True, 100, NOW)
    empty = DlmmPool("e", "x", "y", 10, 0, {}, 10_000)
    with pytest.raises(InsufficientLiquidity):
        dlmm_quote(empty, True, 100, NOW)
    with pytest.raises(InsufficientLiquidity):
        dlmm_spot_price(empty, True)
