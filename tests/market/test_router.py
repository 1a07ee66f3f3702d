"""Smart order routing math: worked examples by hand, and properties over random markets."""

from collections.abc import Sequence
from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.market.exact_out import route_exact_out
from shared.market.meteora import DlmmPool, dlmm_new
from shared.market.plan import BPS, Decision, RoutePlan, hop_minimum
from shared.market.pools import Pool
from shared.market.raydium import RAYDIUM_AMM_V4, RAYDIUM_CPMM, CpPool, cp_new
from shared.market.router import (
    MAX_ROUTE_LEGS,
    PoolsByPair,
    RouteOptions,
    pair,
    pairs_to_read,
    route_exact_in,
    token_paths,
)
from shared.market.split import Curves, best_single
from shared.market.tokens import TOKENS, Token
from shared.market.types import InsufficientLiquidity
from tests.helpers import listed

NOW = 1_700_000_000


BTC, USDC, JUP, SOL, USDT = map(listed, ("BTC", "USDC", "JUP", "SOL", "USDT"))
TOKENS_BY_MINT = {t.mint: t for t in TOKENS}


def _cp(n: int, a: Token, b: Token, reserve_a: int, reserve_b: int, fee_bps: int) -> Pool:
    program = RAYDIUM_AMM_V4 if fee_bps == 25 else RAYDIUM_CPMM
    state = CpPool(f"cp{n}", program, a.mint, b.mint, reserve_a, reserve_b, fee_bps)
    return Pool("raydium", state, 0)


# --- worked by hand -------------------------------------------------------------------------------


def test_two_pool_split_by_hand() -> None:
    # Two fee-free constant-product pools at the same price, one four times deeper. The best
    # split equalises marginal prices, R / (R + x)^2 alike, which gives each pool input in
    # proportion to its reserves: 100_000 and 400_000 of the 500_000.
    #   small: floor(1e6 * 1e5 / 1.1e6) = floor(90_909.09) = 90_909
    #   deep:  floor(4e6 * 4e5 / 4.4e6) = floor(363_636.36) = 363_636   -> 454_545 in total
    # (the two pools act as one pool of 5e6/5e6: 5e6 * 5e5 / 5.5e6 = 454_545.45)
    # The deep pool alone: floor(4e6 * 5e5 / 4.5e6) = 444_444, so the split gains
    # (454_545 - 444_444) / 444_444 = 227.27 bps.
    small = _cp(1, BTC, USDC, 1_000_000, 1_000_000, 0)
    deep = _cp(2, BTC, USDC, 4_000_000, 4_000_000, 0)
    decision = route_exact_in(
        {pair(BTC.mint, USDC.mint): [small, deep]}, BTC, USDC, 500_000, NOW, RouteOptions()
    )
    assert decision is not None
    (hop,) = decision.plan.hops
    by_pool = {leg.pool.address: leg for leg in hop}
    assert set(by_pool) == {"cp1", "cp2"}
    assert abs(by_pool["cp1"].amount_in - 100_000) <= 500  # the last refinement step is ~100
    assert by_pool["cp1"].amount_in + by_pool["cp2"].amount_in == 500_000
    assert 454_540 <= decision.plan.amount_out <= 454_545
    assert decision.best_single is not None and decision.best_single.amount_out == 444_444
    assert Decimal(227) < decision.improvement_bps < Decimal("227.3")
    assert "split over 2 pools" in decision.reason and "bps over the best single" in decision.reason
    event = decision.plan.to_event(TOKENS_BY_MINT)
    percent = {leg["pool"]: Decimal(leg["percent"]) for leg in event}
    assert abs(percent["cp1"] - 20) <= Decimal("0.1") and sum(percent.values()) == 100


def test_two_hop_route_by_hand() -> None:
    # BTC has no pool with JUP; both trade against USDC (AMM v4, fee 25 bps, taken first):
    # hop 1, 1000 BTC units: fee ceil(1000 * 25 / 10000) = 3, net 997,
    #        out = floor(2e6 * 997 / (1e6 + 997)) = floor(1_994_000_000 / 1_000_997) = 1992 USDC
    # hop 2 spends what hop 1 is sure to deliver, 10 bps below its quote:
    #        floor(1992 * 9990 / 10000) = floor(1990.008) = 1990 USDC units;
    #        fee ceil(1990 * 25 / 10000) = ceil(4.975) = 5, net 1985,
    #        out = floor(1.5e6 * 1985 / (3e6 + 1985)) = floor(2_977_500_000 / 3_001_985) = 991 JUP
    pools = {
        pair(BTC.mint, USDC.mint): [_cp(1, BTC, USDC, 1_000_000, 2_000_000, 25)],
        pair(USDC.mint, JUP.mint): [_cp(2, USDC, JUP, 3_000_000, 1_500_000, 25)],
    }
    decision = route_exact_in(pools, BTC, JUP, 1000, NOW, RouteOptions())
    assert decision is not None
    first, second = decision.plan.hops
    assert [(leg.amount_in, leg.amount_out, leg.fee_amount) for leg in first] == [(1000, 1992, 3)]
    assert [(leg.amount_in, leg.amount_out, leg.fee_amount) for leg in second] == [(1990, 991, 5)]
    (guard, _) = decision.plan.guards(50)
    assert (guard.amount_in, guard.min_amount_out) == (1000, 1990)
    assert decision.best_single is None and decision.improvement_bps == 0
    assert decision.reason.startswith("through USDC (2 legs)")
    assert [leg["tokenOut"] for leg in decision.plan.to_event(TOKENS_BY_MINT)] == ["USDC", "JUP"]
    # Direct routes only: nothing trades BTC for JUP.
    assert route_exact_in(pools, BTC, JUP, 1000, NOW, RouteOptions(max_hops=0)) is None


def test_a_three_hop_route_that_would_split_everywhere_stays_within_the_leg_budget() -> None:
    # BTC -> USDC -> SOL -> JUP, three equal pools per hop and an order large enough that every
    # hop would split three ways (nine legs): one transaction cannot carry nine swaps.
    hops = ((BTC, USDC), (USDC, SOL), (SOL, JUP))
    pools: dict[frozenset[str], list[Pool]] = {
        pair(a.mint, b.mint): [_cp(10 * h + i, a, b, 10**9, 10**9, 25) for i in range(3)]
        for h, (a, b) in enumerate(hops)
    }
    decision = route_exact_in(pools, BTC, JUP, 10**8, NOW, RouteOptions())
    assert decision is not None
    legs = [len(hop) for hop in decision.plan.hops]
    assert len(legs) == 3 and sum(legs) == MAX_ROUTE_LEGS < 9
    assert legs[0] == 3  # the budget goes to the first hops, and every hop keeps one


def test_per_leg_minimums_add_up_to_the_route_minimum() -> None:
    pools = {
        pair(BTC.mint, USDC.mint): [_cp(1, BTC, USDC, 10**9, 2 * 10**9, 25)],
        pair(USDC.mint, JUP.mint): [
            _cp(2, USDC, JUP, 3 * 10**9, 10**9, 25),
            _cp(3, USDC, JUP, 3 * 10**9, 10**9, 100),
        ],
    }
    decision = route_exact_in(pools, BTC, JUP, 10**8, NOW, RouteOptions())
    assert decision is not None and decision.plan.is_multi_hop and decision.plan.is_split
    plan, slippage = decision.plan, 50
    guards = plan.guards(slippage)
    first = [g for g in guards if g.leg in plan.hops[0]]
    last = [g for g in guards if g.leg in plan.hops[-1]]
    # An earlier hop must deliver at least what the next one spends, 10 bps below its quote.
    assert [g.min_amount_out for g in first] == [
        leg.amount_out * 9990 // 10_000 for leg in plan.hops[0]
    ]
    assert sum(g.min_amount_out for g in first) == sum(g.amount_in for g in last)
    wanted = plan.amount_out * (BPS - slippage) // BPS
    assert plan.min_amount_out(slippage) == wanted
    assert wanted <= sum(g.min_amount_out for g in last) <= wanted + len(last)
    # A limit order's own floor lifts the minimums with it.
    floor = plan.amount_out - 5
    assert (
        sum(g.min_amount_out for g in plan.guards(slippage, floor))
        - sum(g.min_amount_out for g in first)
        >= floor
    )


def test_paths_and_pairs_read() -> None:
    options = RouteOptions()
    read = pairs_to_read(BTC.mint, JUP.mint, options)
    assert read[0] == pair(BTC.mint, JUP.mint)
    assert pair(BTC.mint, USDC.mint) in read and pair(SOL.mint, USDC.mint) in read
    assert len(read) == len(set(read)) == 1 + 3 + 3 + 3
    assert pairs_to_read(BTC.mint, JUP.mint, RouteOptions(max_hops=0)) == [read[0]]
    pools: PoolsByPair = {
        pair(BTC.mint, USDC.mint): [_cp(1, BTC, USDC, 10, 10, 25)],
        pair(USDC.mint, SOL.mint): [_cp(2, USDC, SOL, 10, 10, 25)],
        pair(SOL.mint, JUP.mint): [_cp(3, SOL, JUP, 10, 10, 25)],
    }
    assert token_paths(pools, BTC.mint, JUP.mint, options) == [
        (BTC.mint, USDC.mint, SOL.mint, JUP.mint)
    ]
    assert token_paths(pools, BTC.mint, JUP.mint, RouteOptions(max_hops=1)) == []
    assert token_paths(pools, BTC.mint, JUP.mint, RouteOptions(dexes=frozenset({"meteora"}))) == []


def test_exact_out_delivers_exactly_the_amount_for_the_least_input() -> None:
    small = _cp(1, BTC, USDC, 10**9, 10**9, 25)
    deep = _cp(2, BTC, USDC, 4 * 10**9, 4 * 10**9, 25)
    pools = {pair(BTC.mint, USDC.mint): [small, deep]}
    decision = route_exact_out(pools, BTC, USDC, 10**8, NOW, RouteOptions())
    assert decision is not None and decision.plan.exact_out and decision.plan.is_split
    assert decision.plan.amount_out == 10**8
    single = decision.best_single
    assert single is not None and single.pool is deep
    assert single.amount_in == deep.min_input(BTC.mint, 10**8, NOW)
    assert decision.plan.amount_in < single.amount_in and decision.improvement_bps > 0
    for leg in decision.plan.legs:
        assert leg.amount_in == leg.pool.min_input(BTC.mint, leg.amount_out, NOW)
    guards = decision.plan.guards(50)
    assert [g.min_amount_out for g in guards] == [leg.amount_out for leg in decision.plan.legs]
    assert decision.plan.max_amount_in(50) <= decision.plan.amount_in * (BPS + 50) // BPS
    # One split only: the deep pool alone.
    one = route_exact_out(pools, BTC, USDC, 10**8, NOW, RouteOptions(max_splits=1))
    assert one is not None and [leg.pool for leg in one.plan.legs] == [deep]
    assert "costs" in one.reason


# --- properties over random markets ---------------------------------------------------------------


@st.composite
def _pool(draw: st.DrawFn, n: int, a: Token, b: Token) -> Pool:
    """A constant-product pool or a DLMM pool of a/b near a price of 1 base unit per base unit."""
    price = Decimal(draw(st.integers(800, 1250))) / 1000
    depth = draw(st.integers(10**6, 10**12))
    if draw(st.booleans()):
        fee = draw(st.sampled_from((25, 100, 200, 400)))
        program = RAYDIUM_AMM_V4 if fee == 25 else RAYDIUM_CPMM
        return Pool("raydium", cp_new(f"p{n}", program, a.mint, b.mint, fee, price, depth), 0)
    step = draw(st.sampled_from((10, 25, 80)))
    bins = draw(st.integers(3, 15))
    state: DlmmPool = dlmm_new(f"p{n}", a.mint, b.mint, step, price, depth, bins_each_side=bins)
    return Pool("meteora", state, 0)


@st.composite
def _market(draw: st.DrawFn, pairs: Sequence[tuple[Token, Token]]) -> PoolsByPair:
    market: dict[frozenset[str], list[Pool]] = {}
    n = 0
    for a, b in pairs:
        pools = []
        for _ in range(draw(st.integers(1, 3))):
            n += 1
            pools.append(draw(_pool(n, a, b)))
        market[pair(a.mint, b.mint)] = pools
    return market


def _check_conservation(plan: RoutePlan) -> None:
    """Each leg is exactly its pool's own swap, and the pool keeps what the leg says."""
    for leg in plan.legs:
        after, fill = leg.pool.swap(leg.mint_in, leg.amount_in, NOW)
        assert (fill.amount_in, fill.amount_out, fill.fee_amount) == (
            leg.amount_in,
            leg.amount_out,
            leg.fee_amount,
        )
        before_in, before_out = _holdings(leg.pool, leg.mint_in)
        after_in, after_out = _holdings(after, leg.mint_in)
        assert after_in - before_in == leg.amount_in
        assert before_out - after_out == leg.amount_out


def _holdings(pool: Pool, mint_in: str) -> tuple[int, int]:
    """(input token held, output token held) by the pool."""
    s = pool.state
    if isinstance(s, CpPool):
        return (s.reserve_a, s.reserve_b) if mint_in == s.mint_a else (s.reserve_b, s.reserve_a)
    x = sum(bx for bx, _ in s.bins.values())
    y = sum(by for _, by in s.bins.values())
    return (x, y) if mint_in == s.mint_x else (y, x)


def _best_single_out(pools: PoolsByPair, a: Token, b: Token, amount: int) -> int:
    fill = best_single(Curves(list(pools.get(pair(a.mint, b.mint), [])), a.mint, NOW), amount)
    return 0 if fill is None else fill.amount_out


def _at_least_the_best_single(
    decision: Decision | None, pools: PoolsByPair, a: Token, b: Token, amount: int
) -> RoutePlan | None:
    """The decision's plan, checked to return at least the best single direct pool (and to
    exist whenever some pool can fill the order); None when there is no route."""
    single = _best_single_out(pools, a, b, amount)
    if decision is None:
        assert single == 0
        return None
    assert decision.plan.amount_out >= single and decision.improvement_bps >= 0
    return decision.plan


@settings(max_examples=120, deadline=None)
@given(_market([(BTC, USDC)]), st.integers(10, 10**11), st.integers(1, 3))
def test_a_split_is_never_worse_than_the_best_single_pool(
    pools: PoolsByPair, amount: int, max_splits: int
) -> None:
    options = RouteOptions(max_hops=0, max_splits=max_splits)
    decision = route_exact_in(pools, BTC, USDC, amount, NOW, options)
    plan = _at_least_the_best_single(decision, pools, BTC, USDC, amount)
    if plan is None:
        return
    assert plan.amount_in == amount == sum(leg.amount_in for leg in plan.hops[0])
    assert len(plan.hops[0]) <= max_splits
    assert len({leg.pool.address for leg in plan.legs}) == len(plan.legs)
    _check_conservation(plan)


@settings(max_examples=80, deadline=None)
@given(
    _market([(BTC, USDC), (USDC, JUP), (BTC, USDT), (USDT, JUP), (BTC, JUP)]),
    st.integers(10, 10**10),
)
def test_multi_hop_routes_chain_their_hops_and_beat_the_direct_pool(
    pools: PoolsByPair, amount: int
) -> None:
    decision = route_exact_in(pools, BTC, JUP, amount, NOW, RouteOptions())
    plan = _at_least_the_best_single(decision, pools, BTC, JUP, amount)
    if plan is None:
        return
    assert plan.hops[0][0].mint_in == BTC.mint and plan.hops[-1][0].mint_out == JUP.mint
    assert plan.amount_in == amount
    for before, after in zip(plan.hops, plan.hops[1:], strict=False):
        assert sum(hop_minimum(leg.amount_out) for leg in before) == sum(
            leg.amount_in for leg in after
        )
        assert {leg.mint_out for leg in before} == {leg.mint_in for leg in after}
    _check_conservation(plan)


@settings(max_examples=80, deadline=None)
@given(_market([(BTC, USDC)]), st.integers(10, 10**10), st.integers(1, 5000))
def test_exact_out_receives_the_amount_and_never_costs_more_than_one_pool(
    pools: PoolsByPair, amount_out: int, slippage_bps: int
) -> None:
    decision = route_exact_out(pools, BTC, USDC, amount_out, NOW, RouteOptions())
    assume(decision is not None)
    assert decision is not None
    plan, single = decision.plan, decision.best_single
    assert plan.amount_out == amount_out == sum(leg.amount_out for leg in plan.legs)
    assert single is not None and plan.amount_in <= single.amount_in
    for leg in plan.legs:
        moved, fill = leg.pool.swap_exact_out(leg.mint_in, leg.amount_out, NOW)
        assert (fill.amount_in, fill.amount_out) == (leg.amount_in, leg.amount_out)
        assert _holdings(moved, leg.mint_in)[0] - _holdings(leg.pool, leg.mint_in)[0] == (
            leg.amount_in
        )
        assert _holdings(leg.pool, leg.mint_in)[1] - _holdings(moved, leg.mint_in)[1] == (
            leg.amount_out
        )
    assert plan.max_amount_in(slippage_bps) <= plan.amount_in * (BPS + slippage_bps) // BPS


@settings(max_examples=150, deadline=None)
@given(_pool(1, BTC, USDC), st.integers(1, 10**12), st.booleans())
def test_min_input_is_the_least_input_that_reaches_the_output(
    pool: Pool, amount_out: int, forward: bool
) -> None:
    mint_in = BTC.mint if forward else USDC.mint
    try:
        least = pool.min_input(mint_in, amount_out, NOW)
    except InsufficientLiquidity:
        assert _holdings(pool, mint_in)[1] <= amount_out  # the pool holds no more than that
        return
    assert pool.quote(mint_in, least, NOW).amount_out >= amount_out
    if least > 1:
        try:
            assert pool.quote(mint_in, least - 1, NOW).amount_out < amount_out
        except InsufficientLiquidity:
            pass
