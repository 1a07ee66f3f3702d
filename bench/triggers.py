"""Limit-order triggers: does the market tick slow down with 10,000 open limit orders?

One market step as the worker's market loop runs it — move the market, check limit triggers,
expire due orders — timed with no open orders and then with many resting far from the market
(plus a few close to it, which must be quoted at full size), in the same run.

Run it with `make bench BENCH_ARGS="--only triggers"` (it is part of `make bench-full`).
"""

import random
import statistics
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool

from bench.clients import say
from bench.stack import Servers
from shared import db as database
from shared import queries, triggers
from shared.market.tokens import PAIRS, resolve_token
from shared.models import validate_order
from shared.settings import Settings
from shared.sim.market import Market


@dataclass(frozen=True)
class Config:
    open_orders: int = 10_000
    near_orders: int = 20  # within reach of the market: quoted at full size every step
    steps: int = 30


async def run(servers: Servers, cfg: Config) -> dict[str, Any]:
    await servers.flush_redis()
    url = await servers.fresh_database("bench_triggers")
    settings = Settings(
        _env_file=None,
        database_url=url,
        redis_url=servers.redis_url,
        sim_latency_scale=0,
        sim_seed=11,
    )
    pool = await database.create_pool(url)
    redis = await create_pool(RedisSettings.from_dsn(servers.redis_url))
    results: dict[str, Any] = {"steps": cfg.steps}
    try:
        market = Market(redis, settings, random.Random(11))
        await market.ensure_seeded()
        results["none"] = await _time_steps(pool, redis, market, cfg.steps)
        _show("no limit orders", results["none"])
        await _place(pool, redis, market, 0, cfg.near_orders)
        results["few"] = await _time_steps(pool, redis, market, cfg.steps)
        _show(f"{cfg.near_orders} limit orders across every pair", results["few"])
        await _place(pool, redis, market, cfg.open_orders, 0)
        results["loaded"] = await _time_steps(pool, redis, market, cfg.steps)
        _show(f"{cfg.open_orders + cfg.near_orders:,} open limit orders", results["loaded"])
    finally:
        await redis.aclose()
        await pool.close()
    results["trigger_check_ratio_loaded_vs_few"] = round(
        results["loaded"]["triggers_ms"] / results["few"]["triggers_ms"], 3
    )
    return results


def _show(label: str, r: dict[str, float]) -> None:
    say(
        f"triggers: {label}: step {r['step_ms']:.2f} ms = tick {r['tick_ms']:.2f}"
        f" + triggers {r['triggers_ms']:.2f} + expiry {r['expiry_ms']:.2f} (medians)"
    )


async def _time_steps(pool: Any, redis: ArqRedis, market: Market, steps: int) -> dict[str, float]:
    """Median ms of one market-loop step and of its parts."""
    parts: dict[str, list[float]] = {
        "tick_ms": [],
        "triggers_ms": [],
        "expiry_ms": [],
        "step_ms": [],
    }
    for _ in range(steps):
        t0 = time.perf_counter()
        await market.tick()
        t1 = time.perf_counter()
        await triggers.check_limits(pool, redis, market)
        t2 = time.perf_counter()
        await triggers.expire_due(pool, redis)
        t3 = time.perf_counter()
        for key, value in (
            ("tick_ms", t1 - t0),
            ("triggers_ms", t2 - t1),
            ("expiry_ms", t3 - t2),
            ("step_ms", t3 - t0),
        ):
            parts[key].append(value * 1000)
    return {k: round(statistics.median(v), 3) for k, v in parts.items()}


async def _place(pool: Any, redis: ArqRedis, market: Market, far: int, near: int) -> None:
    """Insert limit orders the way the API does (row + pending event, then the index)."""
    rng = random.Random(5)
    refs = await market.reference_prices()
    started = time.perf_counter()
    for i in range(far + near):
        base_sym, quote_sym = PAIRS[i % len(PAIRS)]
        base, quote = resolve_token(base_sym), resolve_token(quote_sym)
        assert base is not None and quote is not None
        mid = refs[base_sym] / refs[quote_sym]
        # Far: 30-300 % above the market (resting). Near: 2 % above, a step from being quoted.
        factor = Decimal("1.02") if i >= far else Decimal(str(round(rng.uniform(1.3, 4.0), 4)))
        order = validate_order(
            {
                "type": "limit",
                "tokenIn": base_sym,
                "tokenOut": quote_sym,
                "amountIn": "1",
                "limitPrice": str((mid * factor).quantize(Decimal("1e-9"))),
            }
        )
        oid = uuid.uuid4()
        async with pool.acquire() as conn:
            await queries.insert_order(conn, oid, order)
        await triggers.index_waiting(redis, oid, "limit", base.mint, quote.mint, order.limit_price)
        if i % 2000 == 0:
            say(
                f"triggers: placing limit orders {i:,}/{far + near:,}"
                f" ({time.perf_counter() - started:.0f} s)"
            )
