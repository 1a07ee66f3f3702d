"""Moves the simulated market on a clock; exactly one worker ticks at a time."""

import asyncio
import logging
import os
import socket

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys
from shared.sim.market import Market

log = logging.getLogger(__name__)

# Take the lock if free, or extend it if we hold it; anything else means another worker ticks.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


async def run_ticker(redis: Redis, market: Market, tick_ms: int) -> None:
    """Tick the market every `tick_ms` while this worker holds the ticker lock (until cancelled)."""
    me = f"{socket.gethostname()}:{os.getpid()}"
    lead = redis.register_script(_LEAD)
    while True:
        try:
            if await lead(keys=[keys.MARKET_TICKER_LOCK], args=[me, tick_ms * 3]):
                await market.tick()
        except RedisError as exc:
            log.warning("market tick skipped: %s", exc)
        await asyncio.sleep(tick_ms / 1000)
