"""The market loop: one worker at a time moves the market and fires the triggers it causes."""

import asyncio
import logging
import os
import socket
import time

from redis.exceptions import RedisError

from shared import keys, triggers
from shared.outages import OUTAGE_ERRORS
from worker.engine import Engine

log = logging.getLogger(__name__)

# Checking triggers this often also catches price moves made by fills, not just by ticks.
TRIGGER_INTERVAL_S = 0.1

# Take the lock if free, or extend it if we hold it; anything else means another worker leads.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


async def run_market_loop(engine: Engine) -> None:
    """While this worker holds the lock: tick the market every SIM_TICK_MS (0 = never), and
    after every tick and every TRIGGER_INTERVAL_S fire limit orders and expire waiting ones.
    Runs until cancelled."""
    me = f"{socket.gethostname()}:{os.getpid()}"
    lead = engine.redis.register_script(_LEAD)
    tick_s = engine.settings.sim_tick_ms / 1000
    next_tick = time.monotonic()
    outage = False  # an outage is logged when it starts and when it ends, not every step
    while True:
        try:
            if await lead(keys=[keys.MARKET_TICKER_LOCK], args=[me, 5000]):
                if tick_s and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick_s
                    await engine.market.tick()
                await triggers.check_limits(engine.db, engine.redis, engine.market)
                engine.metrics.expired(await triggers.expire_due(engine.db, engine.redis))
            if outage:
                outage = False
                log.info("market loop: running again")
        except (RedisError, *OUTAGE_ERRORS) as exc:
            if not outage:
                outage = True
                log.warning("market loop: step failed (%r); retrying until it works", exc)
        except Exception:  # ticks and triggers must outlive any single failure
            log.exception("market loop: step failed; retrying")
        await asyncio.sleep(min(tick_s or TRIGGER_INTERVAL_S, TRIGGER_INTERVAL_S))
