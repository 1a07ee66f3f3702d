"""Token launches in the simulated market: a new mint and its first pool appear at once."""

import logging
import random
import time
from dataclasses import dataclass
from decimal import Decimal

import orjson
from redis.asyncio import Redis
from solders.keypair import Keypair

from shared import keys
from shared.grammar import U64_MAX
from shared.market.pools import Pool
from shared.market.raydium import RAYDIUM_CPMM, cp_new
from shared.market.tokens import (
    NATIVE_SOL_MINT,
    RESERVED_ADDRESSES,
    Token,
    price_to_base_units,
    resolve_token,
    unlisted_token,
)
from shared.sim.market import pair_key
from shared.sim.programs import pool_address

log = logging.getLogger(__name__)

LAUNCH_FEE_BPS = 100  # new tokens launch on a 1 % CPMM pool
DEFAULT_PRICE_SOL = Decimal("0.000001")
DEFAULT_LIQUIDITY_SOL = Decimal(50)


@dataclass(frozen=True, slots=True)
class Launch:
    token: Token
    pool: Pool
    price_sol: Decimal
    liquidity_sol: Decimal


class LaunchError(Exception):
    """The launch cannot happen (the mint already trades)."""


async def launched_token(redis: Redis, mint: str) -> Token | None:
    raw = await redis.hget(keys.LAUNCHED_TOKENS, mint)
    if raw is None:
        return None
    return unlisted_token(mint, orjson.loads(raw)["symbol"])


async def token(redis: Redis, symbol_or_mint: str) -> Token | None:
    """A listed token by symbol or mint, or a launched token by mint."""
    return resolve_token(symbol_or_mint) or await launched_token(redis, symbol_or_mint)


async def launch(
    redis: Redis,
    mint: str | None = None,
    symbol: str | None = None,
    price_sol: Decimal = DEFAULT_PRICE_SOL,
    liquidity_sol: Decimal = DEFAULT_LIQUIDITY_SOL,
) -> Launch:
    """Create the token and its SOL pool, then announce it on the launches channel."""
    mint = mint or str(Keypair().pubkey())
    symbol = symbol or f"NEW{random.randint(100, 999)}"
    if resolve_token(mint) is not None or mint in RESERVED_ADDRESSES:
        raise LaunchError(f"{mint} is already listed or is a program's address")
    new = unlisted_token(mint, symbol)
    sol = resolve_token(NATIVE_SOL_MINT)
    assert sol is not None
    reserve_sol = int(liquidity_sol.scaleb(sol.decimals))
    price = price_to_base_units(new, sol, price_sol)  # lamports per token base unit
    address = pool_address(RAYDIUM_CPMM, mint, NATIVE_SOL_MINT, "launch")
    cp = cp_new(address, RAYDIUM_CPMM, mint, NATIVE_SOL_MINT, LAUNCH_FEE_BPS, price, reserve_sol)
    if max(cp.reserve_a, cp.reserve_b) > U64_MAX:
        raise ValueError("price and liquidity give a pool larger than a token account can hold")
    pool = Pool("raydium", cp, 0)
    info = orjson.dumps(
        {"symbol": symbol, "decimals": new.decimals, "launchedAtMs": int(time.time() * 1000)}
    ).decode()
    if not await redis.hsetnx(keys.LAUNCHED_TOKENS, mint, info):
        raise LaunchError(f"{mint} has already launched")
    pk = pair_key(mint, NATIVE_SOL_MINT)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.pools_key(pk), address, pool.dumps())
        pipe.set(keys.pool_version_key(address), 0)
        pipe.hset(keys.POOL_PAIRS, address, pk)
        await pipe.execute()
    log.info("launch: %s (%s) on Raydium CPMM %s at %s SOL", symbol, mint, address, price_sol)
    return Launch(new, pool, price_sol, liquidity_sol)
