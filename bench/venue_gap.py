"""How far apart do the two venues quote? The brief describes a gap of about 2-5 %.

The market drifts tick by tick (reference prices walk, the venues' spreads wander, pools
re-anchor); after each tick every listed pair is quoted on both venues for a small size, and
the gap between the venues' best net outputs is recorded. Delays do not change the
distribution, so the quotes are taken without them.

Run it with `make bench BENCH_ARGS="--only venue_gap"` (it is part of `make bench-full`).
"""

import random
import statistics
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from arq.connections import RedisSettings, create_pool

from bench.clients import say
from bench.stack import Servers
from shared.market.routing import best_per_venue
from shared.market.tokens import PAIRS, resolve_token
from shared.settings import Settings
from shared.sim.market import Market

BUCKETS = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 100))


@dataclass(frozen=True)
class Config:
    ticks: int = 300
    usd_size: Decimal = Decimal(100)


async def run(servers: Servers, cfg: Config) -> dict[str, Any]:
    await servers.flush_redis()
    settings = Settings(_env_file=None, redis_url=servers.redis_url, sim_latency_scale=0)
    redis = await create_pool(RedisSettings.from_dsn(servers.redis_url))
    gaps: list[float] = []
    try:
        market = Market(redis, settings, random.Random(3))
        await market.ensure_seeded()
        for tick in range(cfg.ticks):
            await market.tick()
            gaps += await _gaps(market, cfg.usd_size)
            if tick % 50 == 0:
                say(f"venue gap: tick {tick}/{cfg.ticks}, {len(gaps)} quote pairs so far")
    finally:
        await redis.aclose()
    table = {
        f"{lo}-{hi}%": round(sum(lo <= g < hi for g in gaps) / len(gaps) * 100, 1)
        for lo, hi in BUCKETS
    }
    in_band = round(sum(2 <= g < 5 for g in gaps) / len(gaps) * 100, 1)
    say(
        f"venue gap over {len(gaps)} quotes: median {statistics.median(gaps):.2f}%, "
        f"{in_band}% within 2-5%; distribution {table}"
    )
    return {
        "quotes": len(gaps),
        "median_pct": round(statistics.median(gaps), 3),
        "share_2_to_5_pct": in_band,
        "distribution_pct": table,
    }


async def _gaps(market: Market, usd: Decimal) -> list[float]:
    out = []
    for base_sym, quote_sym in PAIRS:
        base, quote = resolve_token(base_sym), resolve_token(quote_sym)
        assert base is not None and quote is not None
        amount = int(usd / base.ref_price_usd * 10**base.decimals)
        quotes, _ = await market.quotes(base, quote, amount)
        ranked = best_per_venue(quotes)
        if len(ranked) == 2:
            best, other = ranked[0].amount_out, ranked[1].amount_out
            out.append(float((best - other) * 100 / Decimal(other)))
    return out
