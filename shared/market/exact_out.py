"""Exact-out routing: the least input that buys exactly `amount_out`, over a pair's pools.

Exact-out routes are direct (one hop, possibly split): a venue's exact-out instruction names
the output it must deliver, and a second hop would need the first hop's output, which is only
known once it has run. The split comes from the exact-in splitter: at the best single pool's
input, the exact-in split equalises the pools' marginal outputs; each pool is then given its
share of `amount_out` and asked (by its own exact-out math) for the least input that delivers
it. A second round starts from that smaller input. The best single pool wins when no split
costs less.
"""

from shared.market.plan import Decision, Leg, RoutePlan
from shared.market.pools import Pool
from shared.market.router import (
    EXACT_OUT_ROUNDS,
    PoolsByPair,
    RouteOptions,
    explained,
    single_plan,
    usable_pools,
)
from shared.market.routing import MAX_PRICE_IMPACT_PCT, VenueQuote
from shared.market.split import Curves, split_exact_in
from shared.market.tokens import Token
from shared.market.types import InsufficientLiquidity


def exact_out_quote(pool: Pool, mint_in: str, amount_out: int, now_ts: int) -> VenueQuote | None:
    """The pool's least input for exactly `amount_out`, or None when it cannot deliver it."""
    try:
        amount_in = pool.min_input(mint_in, amount_out, now_ts)
        fill = pool.quote(mint_in, amount_in, now_ts)
    except InsufficientLiquidity:
        return None
    if fill.price_impact_pct > MAX_PRICE_IMPACT_PCT:
        return None
    return VenueQuote(pool, amount_in, amount_out, fill.fee_amount, fill.price_impact_pct)


def route_exact_out(
    pools: PoolsByPair,
    token_in: Token,
    token_out: Token,
    amount_out: int,
    now_ts: int,
    options: RouteOptions,
) -> Decision | None:
    """The direct route that delivers exactly `amount_out` for the least input; None when
    no single pool can deliver it (an order that large is beyond what a split would fill at
    any sane price, too)."""
    mint_in, mint_out = token_in.mint, token_out.mint
    usable = usable_pools(pools, mint_in, mint_out, options)
    quotes = [q for p in usable if (q := exact_out_quote(p, mint_in, amount_out, now_ts))]
    single = min(quotes, key=lambda q: q.amount_in, default=None)
    if single is None:
        return None
    best = single_plan(single, mint_in, mint_out, exact_out=True)
    spend = single.amount_in
    for _ in range(EXACT_OUT_ROUNDS if len(usable) > 1 and options.max_splits > 1 else 0):
        plan = _split_for(usable, mint_in, mint_out, spend, amount_out, now_ts, options)
        if plan is None or plan.amount_in >= best.amount_in:
            break
        best, spend = plan, plan.amount_in
    return explained(best, single, quotes, token_in, token_out, options)


def _split_for(
    pools: list[Pool],
    mint_in: str,
    mint_out: str,
    spend: int,
    amount_out: int,
    now_ts: int,
    options: RouteOptions,
) -> RoutePlan | None:
    """Split `amount_out` in the proportions the exact-in split of `spend` gives, each part
    bought for its pool's least input; None when that is no split or a part cannot be bought."""
    fills = split_exact_in(Curves(pools, mint_in, now_ts), spend, options.max_splits)
    if len(fills) < 2:
        return None
    total = sum(f.amount_out for f in fills)
    shares = [amount_out * f.amount_out // total for f in fills]
    largest = max(range(len(fills)), key=lambda i: shares[i])
    shares[largest] += amount_out - sum(shares)
    legs = []
    for fill, share in zip(fills, shares, strict=True):
        q = exact_out_quote(fill.pool, mint_in, share, now_ts) if share else None
        if q is None:
            return None
        legs.append(Leg.of(q, mint_in, mint_out))
    return RoutePlan((tuple(legs),), exact_out=True)
