"""Admission control for new orders: an orders-per-second limit and a queue-depth limit.

Both are checked in one Redis round trip before anything is written, so a rejected request
(429 or 503, with Retry-After) leaves no trace, and the limits hold across API processes. The
rate counts per account for a caller with an API key (its `max_orders_per_s` risk limit), and
per client address for the anonymous callers of AUTH_MODE=open (RATE_LIMIT_PER_S).
"""

import time

from redis.asyncio import Redis

from shared import keys
from shared.errors import RateLimited, RiskLimit, ServiceUnavailable
from shared.jobqueue import depth_lua

# KEYS: the counter for this second, the queue. ARGV: ttl ms.
_ADMIT = f"""
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {{n, {depth_lua("KEYS[2]")}}}
"""


class Admission:
    def __init__(self, redis: Redis, rate_limit_per_s: int, max_queue_depth: int) -> None:
        self.rate_limit_per_s = rate_limit_per_s
        self.max_queue_depth = max_queue_depth
        self._admit = redis.register_script(_ADMIT)

    async def check(
        self, client: str, account: str | None = None, account_limit_per_s: int = 0
    ) -> None:
        """Raise when this order must wait: `RateLimited` (a client address over
        RATE_LIMIT_PER_S), `RiskLimit` 429 (an `account` over `account_limit_per_s`), or
        `ServiceUnavailable` (the queue is full). Limits of 0 are off."""
        second = int(time.time())
        if account is None:
            counter, limit = f"{keys.RATE_LIMIT}{client}:{second}", self.rate_limit_per_s
        else:
            counter, limit = keys.orders_per_s_key(account, second), account_limit_per_s
        if not limit and not self.max_queue_depth:
            return
        count, depth = await self._admit(keys=[counter, keys.QUEUE_NAME], args=[2000])
        if limit and int(count) > limit:
            if account is None:
                raise RateLimited(f"more than {limit} orders per second from {client}", 1)
            raise RiskLimit(
                f"more than {limit} orders per second for account {account}",
                "max_orders_per_s",
                limit,
                429,
            )
        if self.max_queue_depth and int(depth) >= self.max_queue_depth:
            raise ServiceUnavailable(f"queue is full ({depth} orders waiting); retry shortly", 2)
