"""Pre-trade risk checks, per account: what an order may be before anything is written.

Limits come from the settings (RISK_*) with per-account overrides in the `accounts` table
(NULL keeps the default; 0 means no limit). Anonymous callers of AUTH_MODE=open get the
settings' defaults without a database read, so with no RISK_* set their orders cost nothing
more than before. The checks done here are the ones that need no lock: allowed tokens and
notional (valued in USD at the market's reference price, read at most once a second). The
orders-per-second limit is counted by `app.admission` in its existing Redis round trip, and
max open orders is counted under a per-account lock inside the order's insert transaction
(`app.service`), so parallel submissions cannot overshoot it.
"""

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import asyncpg
from arq.connections import ArqRedis

from app.outages import Dependency
from shared import apikeys
from shared.apikeys import Caller
from shared.errors import RiskLimit
from shared.market.tokens import from_base_units, resolve_token
from shared.models import NewOrder
from shared.numbers import dec_str
from shared.settings import Settings
from shared.sim.market import Market

PRICE_CACHE_S = 1.0
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """The limits that apply to one account (0 / None: no limit)."""

    max_notional_usd: Decimal
    max_open_orders: int
    max_orders_per_s: int
    allowed_tokens: frozenset[str] | None  # mints


def allowed_mints(spec: str) -> frozenset[str] | None:
    """RISK_ALLOWED_TOKENS (comma-separated symbols or mints) as mints; None when empty."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        return None
    mints = set()
    for name in names:
        token = resolve_token(name)
        if token is None:
            raise ValueError(f"RISK_ALLOWED_TOKENS: unknown token {name!r}")
        mints.add(token.mint)
    return frozenset(mints)


def default_limits(settings: Settings) -> AccountLimits:
    return AccountLimits(
        settings.risk_max_notional_usd,
        settings.risk_max_open_orders,
        settings.risk_max_orders_per_s,
        allowed_mints(settings.risk_allowed_tokens),
    )


T = TypeVar("T")


def _pick(override: T | None, default: T) -> T:
    return default if override is None else override


def merged(defaults: AccountLimits, overrides: apikeys.Limits) -> AccountLimits:
    return AccountLimits(
        _pick(overrides.max_notional_usd, defaults.max_notional_usd),
        _pick(overrides.max_open_orders, defaults.max_open_orders),
        _pick(overrides.max_orders_per_s, defaults.max_orders_per_s),
        _pick(overrides.allowed_tokens, defaults.allowed_tokens),
    )


class RiskChecks:
    def __init__(
        self,
        settings: Settings,
        pg: Dependency[asyncpg.Pool],
        redis: Dependency[ArqRedis],
        market: Market,
    ) -> None:
        self.defaults = default_limits(settings)
        self._pg, self._redis, self._market = pg, redis, market
        self._cache_s = settings.auth_cache_s
        self._limits: dict[str, tuple[float, AccountLimits]] = {}
        self._prices: tuple[float, dict[str, Decimal]] = (0.0, {})

    async def limits(self, caller: Caller) -> AccountLimits:
        """The caller's account's limits (remembered for AUTH_CACHE_S)."""
        if caller.key_id is None:
            return self.defaults
        now = time.monotonic()
        cached = self._limits.get(caller.account)
        if cached is not None and cached[0] > now:
            return cached[1]

        async def read(db: asyncpg.Pool) -> apikeys.Limits:
            async with db.acquire() as conn:
                return await apikeys.account_limits(conn, caller.account)

        limits = merged(self.defaults, await self._pg.run(read))
        if len(self._limits) >= _CACHE_MAX:
            self._limits.clear()
        self._limits[caller.account] = (now + self._cache_s, limits)
        return limits

    def forget(self, account: str) -> None:
        """Drop an account's remembered limits (this process changed them)."""
        self._limits.pop(account, None)

    async def check(self, limits: AccountLimits, order: NewOrder) -> None:
        """Raise `RiskLimit` if the order breaks the allowed tokens or the notional limit."""
        allowed = limits.allowed_tokens
        if allowed is not None:
            for token in (order.token_in, order.token_out):
                if token.mint not in allowed:
                    raise RiskLimit(
                        f"{token.symbol} is not among this account's allowed tokens",
                        "allowed_tokens",
                        token.symbol,
                    )
        if limits.max_notional_usd:
            notional = await self.notional_usd(order)
            if notional is None or notional > limits.max_notional_usd:
                valued = "cannot be valued" if notional is None else f"is {dec_str(notional)} USD"
                raise RiskLimit(
                    f"order notional {valued}; this account's limit is "
                    f"{dec_str(limits.max_notional_usd)} USD",
                    "max_notional_usd",
                    dec_str(limits.max_notional_usd),
                )

    async def notional_usd(self, order: NewOrder) -> Decimal | None:
        """`amountIn` in USD at tokenIn's reference price, or an exact-out order's `amountOut`
        at tokenOut's (None if the token has none)."""
        token, amount = order.token_in, order.amount_in
        if amount is None:
            token, amount = order.token_out, order.amount_out
        assert amount is not None  # validate_order requires one of the two
        price = (await self._reference_prices()).get(token.symbol)
        if price is None:
            return None
        return (from_base_units(token, amount) * price).quantize(Decimal("0.01"))

    async def _reference_prices(self) -> dict[str, Decimal]:
        now = time.monotonic()
        if self._prices[0] <= now:
            prices = await self._redis.run(lambda _: self._market.reference_prices())
            self._prices = (now + PRICE_CACHE_S, prices)
        return self._prices[1]
