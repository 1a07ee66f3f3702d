"""The simulated market's state in Redis: pools of both venues, reference prices and their drift.

Every worker reads and writes the same pools, so a fill on one worker moves the price the next
quote sees on another. Writes are compare-and-set on a per-pool version, so the math stays in
Python (one implementation) while each write is atomic.
"""

import asyncio
import logging
import random
import time
from decimal import Decimal

from redis.asyncio import Redis

from shared import keys
from shared.batching import Coalescer
from shared.market.exact_out import route_exact_out
from shared.market.meteora import METEORA_DLMM, dlmm_new
from shared.market.plan import Decision
from shared.market.pools import VENUE_NAMES, Pool
from shared.market.raydium import RAYDIUM_AMM_V4, RAYDIUM_CPMM, cp_new
from shared.market.router import PoolsByPair, RouteOptions, pairs_to_read, route_exact_in
from shared.market.routing import MAX_PRICE_IMPACT_PCT, VenueQuote
from shared.market.tokens import PAIRS, Token, price_to_base_units, resolve_token
from shared.market.types import InsufficientLiquidity
from shared.settings import Settings
from shared.sim.prices import PairPrices, listed_pairs, pair_prices, record_prices
from shared.sim.programs import pool_address

log = logging.getLogger(__name__)

QUOTE_LATENCY_S = 0.2
DEFAULT_OPTIONS = RouteOptions()
_STABLES = frozenset({"USDC", "USDT"})
_MAJORS = frozenset({"SOL", "ETH", "BTC", "USDC", "USDT"})

_CAS_POOL = """
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('INCR', KEYS[2])
return 1
"""


def pair_key(mint_a: str, mint_b: str) -> str:
    return f"{min(mint_a, mint_b)}:{max(mint_a, mint_b)}"


def _pool_liquidity_usd(base: Token, quote: Token) -> Decimal:
    return Decimal(8_000_000) if {base.symbol, quote.symbol} <= _MAJORS else Decimal(1_500_000)


def seed_market(seed: int | None) -> list[tuple[Token, Token, Decimal, list[Pool]]]:
    """Every listed pair's first pools (AMM v4, CPMM, DLMM) and its venue spread: what
    `Market.ensure_seeded` stores, reproducible for a given seed (benchmarks use it as is)."""
    rng = random.Random(seed)
    seeded = []
    for base_sym, quote_sym in PAIRS:
        base, quote = resolve_token(base_sym), resolve_token(quote_sym)
        assert base is not None and quote is not None
        spread = Decimal(str(round(rng.uniform(0.02, 0.05), 5))) * rng.choice((1, -1))
        seeded.append((base, quote, spread, _seed_pools(base, quote, spread, rng)))
    return seeded


def _seed_pools(base: Token, quote: Token, spread: Decimal, rng: random.Random) -> list[Pool]:
    mid = price_to_base_units(base, quote, base.ref_price_usd / quote.ref_price_usd)
    reserve_quote = int(_pool_liquidity_usd(base, quote) / quote.ref_price_usd) * 10**quote.decimals
    volatile = not {base.symbol, quote.symbol} <= _MAJORS
    ray_mid, met_mid = mid * (1 + spread / 2), mid * (1 - spread / 2)
    cpmm_fee = 100 if volatile else 25
    return [
        Pool(
            "raydium",
            cp_new(
                pool_address(RAYDIUM_AMM_V4, base.mint, quote.mint, "amm"),
                RAYDIUM_AMM_V4,
                base.mint,
                quote.mint,
                25,
                ray_mid,
                reserve_quote,
            ),
            0,
        ),
        Pool(
            "raydium",
            cp_new(
                pool_address(RAYDIUM_CPMM, base.mint, quote.mint, f"cpmm{cpmm_fee}"),
                RAYDIUM_CPMM,
                base.mint,
                quote.mint,
                cpmm_fee,
                ray_mid * Decimal(str(1 + rng.uniform(-0.004, 0.004))),
                reserve_quote // 4,
            ),
            0,
        ),
        Pool(
            "meteora",
            dlmm_new(
                pool_address(METEORA_DLMM, base.mint, quote.mint, "dlmm"),
                base.mint,
                quote.mint,
                25 if volatile else 10,
                met_mid,
                reserve_quote,
                bins_each_side=40,
            ),
            0,
        ),
    ]


_DECODED_POOLS = 256  # a few states of every pool (PAIRS x 3 pools)
# A pool read that takes longer fails, instead of holding every later read behind it.
READ_TIMEOUT_S = 10.0


class Market:
    """Quotes and state changes of the shared market; construct one per process."""

    def __init__(self, redis: Redis, settings: Settings, rng: random.Random | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.rng = rng or random.Random(settings.sim_seed)
        self._cas = redis.register_script(_CAS_POOL)
        self._pair_of: dict[str, str] = {}
        # Stored pool JSON -> the pool it decodes to. Most reads find a pool unchanged since
        # the last one (only the pool a swap used moves), and decoding a DLMM pool's bins is
        # most of what a quote costs. Pools are immutable, so sharing one object is safe.
        self._decoded: dict[bytes, Pool] = {}
        # Every pair read asked for while one is in flight goes in the next round trip.
        self._pair_reads: Coalescer[str, list[bytes]] = Coalescer(
            self._read_pairs, timeout_s=READ_TIMEOUT_S
        )

    async def _latency(self, seconds: float) -> None:
        scale = self.settings.sim_latency_scale
        if scale > 0:
            await asyncio.sleep(seconds * scale * self.rng.uniform(0.75, 1.25))

    # --- seeding -------------------------------------------------------------------------------

    async def ensure_seeded(self) -> bool:
        """Create the pools once per Redis; returns True when this call created them."""
        if not await self.redis.set(keys.MARKET_SEEDED, "seeding", nx=True):
            return False
        refs: dict[str, Decimal] = {}
        for base, quote, spread, pools in seed_market(self.settings.sim_seed):
            refs[base.symbol], refs[quote.symbol] = base.ref_price_usd, quote.ref_price_usd
            await self._store_pair(base, quote, spread, pools)
        await self.redis.hset(keys.REF_PRICES, mapping={k: str(v) for k, v in refs.items()})
        await self.redis.setnx(keys.CLUSTER_GENESIS_MS, int(time.time() * 1000))
        await self.redis.set(keys.MARKET_SEEDED, "1")
        log.info("market seeded: %d pairs, 3 pools each", len(PAIRS))
        return True

    async def _store_pair(
        self, base: Token, quote: Token, spread: Decimal, pools: list[Pool]
    ) -> None:
        pk = pair_key(base.mint, quote.mint)
        async with self.redis.pipeline(transaction=True) as pipe:
            for pool in pools:
                pipe.hset(keys.pools_key(pk), pool.address, pool.dumps())
                pipe.set(keys.pool_version_key(pool.address), 0)
                pipe.hset(keys.POOL_PAIRS, pool.address, pk)
            pipe.hset(keys.VENUE_SPREADS, pk, str(spread))
            await pipe.execute()

    # --- reads ---------------------------------------------------------------------------------

    async def pools(self, mint_a: str, mint_b: str) -> list[Pool]:
        raw = await self._pair_reads.submit(keys.pools_key(pair_key(mint_a, mint_b)))
        return [self._decode(r) for r in raw]

    async def _read_pairs(self, hashes: list[str]) -> list[list[bytes]]:
        """Each distinct pair's pools read once, all in one round trip; each read is sent
        after it was asked for, so a process still reads its own writes."""
        distinct = list(dict.fromkeys(hashes))
        async with self.redis.pipeline(transaction=False) as pipe:
            for h in distinct:
                pipe.hvals(h)
            found = dict(zip(distinct, await pipe.execute(), strict=True))
        return [found[h] for h in hashes]

    async def pool(self, address: str) -> Pool | None:
        pk = self._pair_of.get(address)
        if pk is None:  # a pool's pair never changes, so one lookup per address is enough
            found = await self.redis.hget(keys.POOL_PAIRS, address)
            if found is None:
                return None
            pk = self._pair_of[address] = found.decode()
        raw = await self.redis.hget(keys.pools_key(pk), address)
        return None if raw is None else self._decode(raw)

    def _decode(self, raw: bytes) -> Pool:
        pool = self._decoded.get(raw)
        if pool is None:
            pool = Pool.loads(raw)
            self.remember(raw, pool)
        return pool

    def remember(self, raw: bytes, pool: Pool) -> None:
        """`raw` is `pool`'s stored JSON: a read that finds it need not decode it (the cluster
        tells this after each write, so the next route's read of that pool costs nothing)."""
        if len(self._decoded) >= _DECODED_POOLS:
            del self._decoded[next(iter(self._decoded))]  # the oldest
        self._decoded[raw] = pool

    async def write_pool(self, pool: Pool, expected_version: int) -> bool:
        """Store `pool` if nobody wrote that pool since `expected_version` was read."""
        pk = pair_key(*pool.mints)
        done = await self._cas(
            keys=[keys.pools_key(pk), keys.pool_version_key(pool.address)],
            args=[expected_version, pool.address, pool.dumps()],
        )
        return bool(done)

    # --- quoting and routing -------------------------------------------------------------------

    async def quotes(
        self, token_in: Token, token_out: Token, amount_in: int
    ) -> tuple[list[VenueQuote], dict[str, str]]:
        """Every pool's quote for the pair (venues asked concurrently) and venues that failed."""
        pools = await self.pools(token_in.mint, token_out.mint)
        now_ts = int(time.time())
        results = await asyncio.gather(
            *(
                self._venue_quotes(
                    v, [p for p in pools if p.venue == v], token_in, amount_in, now_ts
                )
                for v in VENUE_NAMES
            )
        )
        quotes = [q for ok, _ in results for q in ok]
        failed = {venue: why for (_, why), venue in zip(results, VENUE_NAMES, strict=True) if why}
        return quotes, failed

    async def _venue_quotes(
        self, venue: str, pools: list[Pool], token_in: Token, amount_in: int, now_ts: int
    ) -> tuple[list[VenueQuote], str | None]:
        await self._latency(QUOTE_LATENCY_S)  # one RPC round trip per venue
        if not pools:
            return [], "no pool for this pair"
        out: list[VenueQuote] = []
        for pool in pools:
            try:
                q = pool.quote(token_in.mint, amount_in, now_ts)
            except InsufficientLiquidity:
                continue
            if q.price_impact_pct > MAX_PRICE_IMPACT_PCT:
                continue
            out.append(
                VenueQuote(pool, q.amount_in, q.amount_out, q.fee_amount, q.price_impact_pct)
            )
        why = f"insufficient liquidity (or price impact over {MAX_PRICE_IMPACT_PCT}%)"
        return out, (None if out else why)

    async def route_pools(
        self, mint_in: str, mint_out: str, options: RouteOptions = DEFAULT_OPTIONS
    ) -> PoolsByPair:
        """The pools of every pair a route between the mints may use, in one round trip."""
        wanted = pairs_to_read(mint_in, mint_out, options)
        found = await asyncio.gather(*(self.pools(*sorted(p)) for p in wanted))
        return dict(zip(wanted, found, strict=True))

    async def route(
        self,
        token_in: Token,
        token_out: Token,
        amount: int,
        options: RouteOptions = DEFAULT_OPTIONS,
        exact_out: bool = False,
    ) -> Decision | None:
        """The best route for `amount` (of token_in, or of token_out when `exact_out`) over
        the pools it may use, read in one round trip; None when nothing can fill it."""
        pools, _ = await asyncio.gather(
            self.route_pools(token_in.mint, token_out.mint, options),
            self._latency(QUOTE_LATENCY_S),  # the venues are asked concurrently
        )
        now_ts = int(time.time())
        find = route_exact_out if exact_out else route_exact_in
        return find(pools, token_in, token_out, amount, now_ts, options)

    async def prices(self) -> list[PairPrices]:
        """Every listed pair's venue prices now (the pools read in one round trip)."""
        pairs = listed_pairs()
        found = await asyncio.gather(*(self.pools(b.mint, q.mint) for b, q in pairs))
        return [pair_prices(p, b, q) for p, (b, q) in zip(found, pairs, strict=True)]

    # --- drift ---------------------------------------------------------------------------------

    async def reference_prices(self) -> dict[str, Decimal]:
        raw = await self.redis.hgetall(keys.REF_PRICES)
        return {k.decode(): Decimal(v.decode()) for k, v in raw.items()}

    async def tick(self) -> int:
        """One market move: reference prices walk, venue spreads wander, pools re-anchor.

        Returns how many pools moved. Called by one worker at a time (see worker.ticker).
        """
        refs = await self.reference_prices()
        for sym, price in refs.items():
            if sym not in _STABLES:
                refs[sym] = price * Decimal(str(round(1 + self.rng.gauss(0, 0.0015), 8)))
        await self.redis.hset(keys.REF_PRICES, mapping={k: str(v) for k, v in refs.items()})
        moved = 0
        for base_sym, quote_sym in PAIRS:
            base, quote = resolve_token(base_sym), resolve_token(quote_sym)
            assert base is not None and quote is not None
            moved += await self._move_pair(base, quote, refs[base.symbol] / refs[quote.symbol])
        await record_prices(self.redis, await self.prices())  # the dashboard's sparklines
        return moved

    async def _move_pair(self, base: Token, quote: Token, price: Decimal) -> int:
        pk = pair_key(base.mint, quote.mint)
        spread = self._next_spread(
            Decimal((await self.redis.hget(keys.VENUE_SPREADS, pk) or b"0.03").decode())
        )
        await self.redis.hset(keys.VENUE_SPREADS, pk, str(spread))
        mid = price_to_base_units(base, quote, price)
        moved, now_ts = 0, int(time.time())
        for pool in await self.pools(base.mint, quote.mint):
            side = 1 if pool.venue == "raydium" else -1
            target = mid * (1 + side * spread / 2)
            moved += await self.write_pool(pool.repriced(target, now_ts), pool.version)
        return moved

    def _next_spread(self, spread: Decimal) -> Decimal:
        # Mean-reverting around ±3.5 % with noise, flipping side now and then: the venues
        # usually disagree by 2-5 %, as on mainnet between an AMM and a DLMM.
        sign = -1 if spread < 0 else 1
        if self.rng.random() < 0.02:
            sign = -sign
        level = abs(spread) + Decimal("0.2") * (Decimal("0.035") - abs(spread))
        level += Decimal(str(round(self.rng.gauss(0, 0.003), 6)))
        return sign * min(max(level, Decimal("0.005")), Decimal("0.08"))
