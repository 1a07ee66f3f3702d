"""Admission control for new orders: a per-client rate limit and a queue-depth limit.

Both are checked in one Redis round trip before anything is written, so a rejected request
(429 or 503, with Retry-After) leaves no trace, and the limits hold across API processes.
"""

import time

from redis.asyncio import Redis

from shared import keys
from shared.errors import RateLimited, ServiceUnavailable
from shared.jobqueue import depth_lua

# KEYS: the client's counter for this second, the queue. ARGV: ttl ms.
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

    async def check(self, client: str) -> None:
        """Raise `RateLimited` or `ServiceUnavailable` when this order must wait."""
        if not self.rate_limit_per_s and not self.max_queue_depth:
            return
        second = int(time.time())
        counter = f"{keys.RATE_LIMIT}{client}:{second}"
        count, depth = await self._admit(keys=[counter, keys.QUEUE_NAME], args=[2000])
        if self.rate_limit_per_s and int(count) > self.rate_limit_per_s:
            raise RateLimited(
                f"more than {self.rate_limit_per_s} orders per second from {client}", 1
            )
        if self.max_queue_depth and int(depth) >= self.max_queue_depth:
            raise ServiceUnavailable(f"queue is full ({depth} orders waiting); retry shortly", 2)
