"""Smart order routing on a seeded market: what it gains over the best single pool, how often
it splits or goes through intermediate tokens, and what a route costs to compute.

The market is `shared.sim.market.seed_market` for several seeds (each seed draws other venue
spreads), held in memory: routing is pure math on pools already read, so no server takes part
and the figures are the router's own. Orders run from 0.01 % to 5 % of the pair's depth (the
input its direct pools could absorb at mid: their output reserves over spot; for a pair
without a pool, that of the first hop of its route for a tiny order). Each order is routed with
the defaults (intermediate tokens, splits) and with `onlyDirectRoutes` (splits only); exact-out
orders for the direct pairs are timed too.

Run it with `make bench` (quick and full) or `make bench BENCH_ARGS="--only routing"`.
"""

import statistics
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bench.clients import say
from bench.stack import Servers
from shared.market.exact_out import route_exact_out
from shared.market.plan import Decision
from shared.market.pools import Pool
from shared.market.raydium import CpPool
from shared.market.router import PoolsByPair, RouteOptions, pair, route_exact_in
from shared.market.tokens import Token, resolve_token
from shared.sim.market import seed_market

DIRECT = (("SOL", "USDC"), ("USDC", "SOL"), ("ETH", "USDT"), ("BONK", "SOL"), ("JUP", "USDC"))
THROUGH = (("BTC", "BONK"), ("ETH", "SOL"), ("WIF", "USDC"), ("RAY", "SOL"))
SHARES = ("0.0001", "0.0003", "0.001", "0.003", "0.01", "0.02", "0.05")  # of the pair's depth
TARGET_DIRECT_P99_MS = 5.0
TARGET_THROUGH_P99_MS = 20.0


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)


@dataclass
class _Tally:
    timings_ms: dict[str, list[float]]
    gains_bps: list[float]  # routes with every option, direct pairs
    split_gains_bps: list[float]  # onlyDirectRoutes: what splitting alone gains
    split: int = 0
    multi_hop: int = 0
    orders: int = 0

    def count(self, decision: Decision) -> None:
        self.orders += 1
        self.split += decision.plan.is_split
        self.multi_hop += decision.plan.is_multi_hop


async def run(servers: Servers, cfg: Config) -> dict[str, Any]:
    del servers  # pure math on pools in memory: no server takes part
    tally = _Tally({"direct": [], "through": [], "exact_out": []}, [], [])
    for seed in cfg.seeds:
        pools = {pair(b.mint, q.mint): ps for b, q, _, ps in seed_market(seed)}
        for a, b in DIRECT + THROUGH:
            token_in, token_out = _listed(a), _listed(b)
            depth = _depth(pools, token_in, token_out)
            for share in SHARES:
                _order(tally, pools, token_in, token_out, int(depth * Decimal(share)), (a, b))
        say(f"routing: seed {seed}, {tally.orders} orders routed so far")
    return _summary(tally)


def _order(
    tally: _Tally,
    pools: PoolsByPair,
    token_in: Token,
    token_out: Token,
    amount: int,
    symbols: tuple[str, str],
) -> None:
    now_ts = int(time.time())
    decision, elapsed_ms = _timed(
        lambda: route_exact_in(pools, token_in, token_out, amount, now_ts, RouteOptions())
    )
    if decision is None:
        return
    tally.count(decision)
    tally.timings_ms["through"].append(elapsed_ms)
    if symbols not in DIRECT:
        return
    direct_only = RouteOptions(max_hops=0)
    direct, direct_ms = _timed(
        lambda: route_exact_in(pools, token_in, token_out, amount, now_ts, direct_only)
    )
    tally.timings_ms["direct"].append(direct_ms)
    assert direct is not None and decision.best_single is not None
    gain = decision.improvement_bps
    assert gain >= 0 and direct.improvement_bps >= 0, (symbols, amount, gain)
    tally.gains_bps.append(float(gain))
    tally.split_gains_bps.append(float(direct.improvement_bps))
    wanted = max(1, direct.plan.amount_out)
    _, exact_ms = _timed(
        lambda: route_exact_out(pools, token_in, token_out, wanted, now_ts, direct_only)
    )
    tally.timings_ms["exact_out"].append(exact_ms)


def _timed(route: Any) -> tuple[Decision | None, float]:
    started = time.perf_counter()
    decision = route()
    return decision, (time.perf_counter() - started) * 1000


def _listed(symbol: str) -> Token:
    token = resolve_token(symbol)
    assert token is not None
    return token


def _depth(pools: PoolsByPair, token_in: Token, token_out: Token) -> Decimal:
    """What the pair's direct pools could absorb at mid, in tokenIn base units; for a pair
    without a pool, the first hop of its route for a tiny order."""
    direct = pools.get(pair(token_in.mint, token_out.mint))
    if direct:
        return sum((_absorbs(p, token_in.mint) for p in direct), Decimal(0))
    probe = route_exact_in(pools, token_in, token_out, 10**token_in.decimals, 0, RouteOptions())
    assert probe is not None
    first = probe.plan.hops[0][0]
    hop = pools[pair(first.mint_in, first.mint_out)]
    return sum((_absorbs(p, token_in.mint) for p in hop), Decimal(0))


def _absorbs(pool: Pool, mint_in: str) -> Decimal:
    state = pool.state
    if isinstance(state, CpPool):
        held = state.reserve_b if mint_in == state.mint_a else state.reserve_a
    else:
        side = 1 if mint_in == state.mint_x else 0
        held = sum(xy[side] for xy in state.bins.values())
    return Decimal(held) / pool.spot_price(mint_in)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _gains(gains: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(gains), 2),
        "max": round(max(gains), 2),
        "min": round(min(gains), 2),
        "improved_share_pct": round(sum(g > 0 for g in gains) / len(gains) * 100, 1),
    }


def _summary(tally: _Tally) -> dict[str, Any]:
    timing: dict[str, dict[str, float]] = {
        mode: {
            "p50_ms": round(statistics.median(ms), 3),
            "p99_ms": round(_percentile(ms, 0.99), 3),
            "max_ms": round(max(ms), 3),
            "routes": len(ms),
        }
        for mode, ms in tally.timings_ms.items()
    }
    out = {
        "orders": tally.orders,
        "improvement_bps": _gains(tally.gains_bps),
        "split_only_improvement_bps": _gains(tally.split_gains_bps),
        "split_share_pct": round(tally.split / tally.orders * 100, 1),
        "multi_hop_share_pct": round(tally.multi_hop / tally.orders * 100, 1),
        "timing": timing,
        "targets": {
            "direct_p99_ms": TARGET_DIRECT_P99_MS,
            "through_p99_ms": TARGET_THROUGH_P99_MS,
            "met": timing["direct"]["p99_ms"] <= TARGET_DIRECT_P99_MS
            and timing["through"]["p99_ms"] <= TARGET_THROUGH_P99_MS,
        },
    }
    gain, split = _gains(tally.gains_bps), _gains(tally.split_gains_bps)
    say(
        f"routing: {tally.orders} orders; gain over the best single pool median "
        f"{gain['median']} bps, max {gain['max']} bps (splits alone: median "
        f"{split['median']}, max {split['max']}); "
        f"split {out['split_share_pct']}%, multi-hop {out['multi_hop_share_pct']}%; "
        f"p99 direct {timing['direct']['p99_ms']} ms, with intermediates "
        f"{timing['through']['p99_ms']} ms, exact-out {timing['exact_out']['p99_ms']} ms"
    )
    return out
