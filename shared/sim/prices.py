"""Each listed pair's price on each venue now, and a short history of it (for the dashboard).

A venue's price for a pair is the mid (spot, before fees) of its reference pool: Raydium's AMM
v4 pool and Meteora's DLMM pool, the deepest of each venue. The market ticker records one
snapshot of every pair per tick in a capped Redis list, so any API process can answer with the
last minutes of prices and a freshly opened page draws its sparklines at once.
"""

import time
from dataclasses import dataclass
from decimal import Decimal, localcontext

import orjson
from redis.asyncio import Redis

from shared import keys
from shared.market.meteora import METEORA_DLMM
from shared.market.pools import Pool
from shared.market.raydium import RAYDIUM_AMM_V4
from shared.market.tokens import PAIRS, Token, resolve_token
from shared.numbers import dec_str

# Ticks kept: 5 minutes at the default tick of 1 s.
HISTORY_LEN = 300
_REFERENCE_PROGRAM = {"raydium": RAYDIUM_AMM_V4, "meteora": METEORA_DLMM}
_SIGNIFICANT_DIGITS = 10


@dataclass(frozen=True, slots=True)
class PairPrices:
    """`quote` per `base` on each venue (None when the venue has no pool for the pair)."""

    base: Token
    quote: Token
    raydium: Decimal | None
    meteora: Decimal | None

    @property
    def name(self) -> str:
        return f"{self.base.symbol}/{self.quote.symbol}"

    @property
    def gap_bps(self) -> Decimal | None:
        """How far apart the venues are, in basis points of the lower price."""
        if not self.raydium or not self.meteora:
            return None
        low = min(self.raydium, self.meteora)
        return round_significant(abs(self.raydium - self.meteora) * 10_000 / low, 4)


def listed_pairs() -> list[tuple[Token, Token]]:
    """Every listed (base, quote) pair as tokens."""
    pairs = []
    for base_sym, quote_sym in PAIRS:
        base, quote = resolve_token(base_sym), resolve_token(quote_sym)
        assert base is not None and quote is not None
        pairs.append((base, quote))
    return pairs


def round_significant(value: Decimal, digits: int = _SIGNIFICANT_DIGITS) -> Decimal:
    """`value` to `digits` significant digits (what a price display can use)."""
    with localcontext() as ctx:
        ctx.prec = digits
        return +value


def venue_price(pools: list[Pool], venue: str, base: Token, quote: Token) -> Decimal | None:
    """`quote` per `base` in human units at the venue's reference pool's mid."""
    mine = [p for p in pools if p.venue == venue]
    if not mine:
        return None
    ref = next((p for p in mine if p.program_id == _REFERENCE_PROGRAM[venue]), mine[0])
    per_base_unit = ref.spot_price(base.mint)
    return round_significant(per_base_unit * Decimal(10) ** (base.decimals - quote.decimals))


def pair_prices(pools: list[Pool], base: Token, quote: Token) -> PairPrices:
    return PairPrices(
        base,
        quote,
        venue_price(pools, "raydium", base, quote),
        venue_price(pools, "meteora", base, quote),
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else dec_str(value)


def snapshot_entry(prices: list[PairPrices], at_ms: int | None = None) -> bytes:
    """One history entry: `{"at": ms, "p": {"SOL/USDC": [raydium, meteora], ...}}`."""
    return orjson.dumps(
        {
            "at": int(time.time() * 1000) if at_ms is None else at_ms,
            "p": {p.name: [_text(p.raydium), _text(p.meteora)] for p in prices},
        }
    )


async def record_prices(redis: Redis, prices: list[PairPrices]) -> None:
    """Append a snapshot to the history, keeping the last `HISTORY_LEN`."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(keys.MARKET_HISTORY, snapshot_entry(prices))
        pipe.ltrim(keys.MARKET_HISTORY, 0, HISTORY_LEN - 1)
        await pipe.execute()


async def price_history(redis: Redis, limit: int = HISTORY_LEN) -> list[dict[str, object]]:
    """The recorded snapshots, oldest first."""
    raw = await redis.lrange(keys.MARKET_HISTORY, 0, limit - 1)
    return [orjson.loads(r) for r in reversed(raw)]
