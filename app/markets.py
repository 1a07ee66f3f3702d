"""What the dashboard reads about the market: the tokens and pairs traded, each pair's price on
both venues with the gap between them, and the last minutes of those prices."""

from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from pydantic import Field

from app.outages import Dependency
from shared.market.tokens import TOKENS
from shared.models import CamelModel
from shared.numbers import dec_str
from shared.sim.market import Market
from shared.sim.prices import PairPrices, listed_pairs, price_history


class TokenInfo(CamelModel):
    symbol: str
    name: str
    mint: str
    decimals: int


class PairInfo(CamelModel):
    name: str
    base: str
    quote: str


class TokenList(CamelModel):
    tokens: list[TokenInfo]
    pairs: list[PairInfo]


class PricePoint(CamelModel):
    at: int  # milliseconds since the epoch
    raydium: str | None
    meteora: str | None


class MarketPair(CamelModel):
    name: str
    base: str
    quote: str
    raydium: str | None  # quote per base at the venue's reference pool's mid
    meteora: str | None
    gap_bps: str | None  # |raydium - meteora| in basis points of the lower price
    cheaper: str | None  # the venue where base costs less (where a buyer of base goes)
    history: list[PricePoint] = Field(default_factory=list)


class Markets(CamelModel):
    at: datetime
    markets: list[MarketPair]


def token_list() -> dict[str, Any]:
    """The listed tokens and the pairs some pool trades (either direction)."""
    return TokenList(
        tokens=[
            TokenInfo(symbol=t.symbol, name=t.name, mint=t.mint, decimals=t.decimals)
            for t in TOKENS
        ],
        pairs=[
            PairInfo(name=f"{b.symbol}/{q.symbol}", base=b.symbol, quote=q.symbol)
            for b, q in listed_pairs()
        ],
    ).model_dump(by_alias=True)


def market_pair(p: PairPrices, history: list[dict[str, Any]]) -> MarketPair:
    cheaper = None
    if p.raydium is not None and p.meteora is not None and p.raydium != p.meteora:
        cheaper = "raydium" if p.raydium < p.meteora else "meteora"
    points = [
        PricePoint(at=h["at"], raydium=h["p"][p.name][0], meteora=h["p"][p.name][1])
        for h in history
        if p.name in h["p"]
    ]
    return MarketPair(
        name=p.name,
        base=p.base.symbol,
        quote=p.quote.symbol,
        raydium=None if p.raydium is None else dec_str(p.raydium),
        meteora=None if p.meteora is None else dec_str(p.meteora),
        gap_bps=None if p.gap_bps is None else dec_str(p.gap_bps),
        cheaper=cheaper,
        history=points,
    )


async def markets(redis: Dependency[ArqRedis], market: Market, points: int) -> dict[str, Any]:
    """Every pair's venue prices now, with up to `points` recorded ticks (oldest first)."""

    async def read(client: ArqRedis) -> tuple[list[PairPrices], list[dict[str, Any]]]:
        history = await price_history(client, points) if points else []
        return await market.prices(), history

    prices, history = await redis.run(read)
    return Markets(
        at=datetime.now(UTC), markets=[market_pair(p, history) for p in prices]
    ).model_dump(by_alias=True, mode="json")
