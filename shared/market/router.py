"""Smart order routing: the best route for an order over every pool the market holds.

A route is a path of tokens (direct, or through up to `max_hops` intermediate tokens: SOL,
USDC, USDT), each hop split over that pair's pools (`shared.market.split`). Paths never share
a pool (each hop is a different pair), and each hop's output only grows with its input, so
the best route on a path is the best split of each hop in turn. Paths are tried best bound
first and skipped once their bound (every hop at its best pool's rate bound) cannot beat the
best route found. The route is never worse than the best single pool of the pair: it is
compared with it and replaced by it when it is not better.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise, permutations

from shared.market.plan import BPS, HOP_SLIPPAGE_BPS, Decision, Leg, RoutePlan, hop_minimum
from shared.market.pools import VENUE_NAMES, Pool
from shared.market.routing import VenueQuote, best_per_venue, choose_route
from shared.market.split import Curves, split_exact_in
from shared.market.tokens import TOKENS, Token, from_base_units, is_listed_pair
from shared.market.types import InsufficientLiquidity
from shared.numbers import dec_str

INTERMEDIATES: tuple[str, ...] = tuple(
    t.mint for t in TOKENS if t.symbol in {"SOL", "USDC", "USDT"}
)
MAX_HOPS = 2  # intermediate tokens a route may pass through
MAX_SPLITS = 3  # pools one hop may be split over (every pair has three)
# Swap instructions in one route. A route is one transaction, and a Solana transaction is at
# most 1,232 bytes (one network packet): seven legs over three hops fit with room to spare,
# nine do not (tests/test_cluster.py builds the largest route the router can return).
MAX_ROUTE_LEGS = 7
EXACT_OUT_ROUNDS = 2

HOP_KEEP = Decimal(BPS - HOP_SLIPPAGE_BPS) / BPS  # what an intermediate hop passes on, at worst
# An unordered pair of mints -> the pools that trade it.
PoolsByPair = Mapping[frozenset[str], Sequence[Pool]]


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """What a route may use: `max_hops` intermediate tokens (0 = direct only), pools of the
    `dexes` venues, and `max_splits` pools per hop."""

    dexes: frozenset[str] = frozenset(VENUE_NAMES)
    max_hops: int = MAX_HOPS
    max_splits: int = MAX_SPLITS
    intermediates: tuple[str, ...] = INTERMEDIATES


def pair(a: str, b: str) -> frozenset[str]:
    return frozenset((a, b))


_LISTED = frozenset(
    frozenset((a.mint, b.mint)) for a in TOKENS for b in TOKENS if is_listed_pair(a, b)
)


def hops_needed(
    mint_in: str, mint_out: str, intermediates: Sequence[str] = INTERMEDIATES
) -> int | None:
    """The fewest intermediate tokens a route between two listed tokens needs over the listed
    pairs (0: a pool trades the pair); None when no route within `MAX_HOPS` exists."""
    listed = _LISTED
    hubs = [m for m in intermediates if m not in (mint_in, mint_out)]
    for n in range(MAX_HOPS + 1):
        for middle in permutations(hubs, n):
            path = (mint_in, *middle, mint_out)
            if all(pair(a, b) in listed for a, b in pairwise(path)):
                return n
    return None


def pairs_to_read(mint_in: str, mint_out: str, options: RouteOptions) -> list[frozenset[str]]:
    """Every pair a route between these mints could use under `options`."""
    hubs = [m for m in options.intermediates if m not in (mint_in, mint_out)]
    wanted = [pair(mint_in, mint_out)]
    if options.max_hops >= 1:
        wanted += [pair(mint_in, h) for h in hubs] + [pair(h, mint_out) for h in hubs]
    if options.max_hops >= 2:
        wanted += [pair(a, b) for a, b in permutations(hubs, 2) if a < b]
    return wanted


def token_paths(
    pools: PoolsByPair, mint_in: str, mint_out: str, options: RouteOptions
) -> list[tuple[str, ...]]:
    """Every path of mints from `mint_in` to `mint_out` whose hops all have usable pools."""
    hubs = [m for m in options.intermediates if m not in (mint_in, mint_out)]
    middles: list[tuple[str, ...]] = [()]
    for n in range(1, options.max_hops + 1):
        middles += list(permutations(hubs, n))
    paths = [(mint_in, *middle, mint_out) for middle in middles]
    return [p for p in paths if all(usable_pools(pools, a, b, options) for a, b in _hops(p))]


def _hops(path: tuple[str, ...]) -> list[tuple[str, str]]:
    return list(pairwise(path))


def usable_pools(pools: PoolsByPair, a: str, b: str, options: RouteOptions) -> list[Pool]:
    """The pools of pair a-b that `options` allow."""
    return [p for p in pools.get(pair(a, b), ()) if p.venue in options.dexes]


class _Search:
    """One route search: the pools `options` allow, each hop's curves shared by every path
    that crosses it (the same quotes and rate bounds are asked for many times)."""

    def __init__(self, pools: PoolsByPair, options: RouteOptions, now_ts: int) -> None:
        self.pools, self.options, self.now_ts = pools, options, now_ts
        self._curves: dict[tuple[str, str], Curves] = {}

    def curves(self, a: str, b: str) -> Curves:
        found = self._curves.get((a, b))
        if found is None:
            usable = usable_pools(self.pools, a, b, self.options)
            found = self._curves[a, b] = Curves(usable, a, self.now_ts)
        return found

    def bound(self, path: tuple[str, ...], amount: int) -> Decimal:
        """No route on `path` returns more than this: each hop at its best pool's rate bound,
        and each intermediate hop passing on `HOP_KEEP` of it."""
        value = Decimal(amount)
        for a, b in _hops(path):
            curves = self.curves(a, b)
            rates = []
            for i in range(len(curves.pools)):
                try:
                    rates.append(curves.rate(i))
                except InsufficientLiquidity:
                    continue
            if not rates:
                return Decimal(0)
            value *= max(rates)
        return value * HOP_KEEP ** (len(path) - 2)

    def route_on(self, path: tuple[str, ...], amount: int) -> RoutePlan | None:
        """The best route on `path`: each hop split in turn, within `MAX_ROUTE_LEGS` legs in
        all (each later hop keeps at least one)."""
        hops: list[tuple[Leg, ...]] = []
        pairs = _hops(path)
        legs_left = MAX_ROUTE_LEGS
        for i, (a, b) in enumerate(pairs):
            splits = min(self.options.max_splits, legs_left - (len(pairs) - i - 1))
            fills = split_exact_in(self.curves(a, b), amount, splits)
            if not fills:
                return None
            legs_left -= len(fills)
            hops.append(tuple(Leg.of(f, a, b) for f in fills))
            # The next hop spends what this one is sure to deliver (see shared.market.plan).
            amount = sum(hop_minimum(f.amount_out) for f in fills)
        return RoutePlan(tuple(hops))

    def direct_quotes(self, mint_in: str, mint_out: str, amount: int) -> list[VenueQuote]:
        """Every usable direct pool's quote for the whole amount (those that can fill it)."""
        curves = self.curves(mint_in, mint_out)
        fills = (curves.fill(i, amount) for i in range(len(curves.pools)))
        return [f for f in fills if f is not None]


def rate_bound(pools: PoolsByPair, mint_in: str, mint_out: str, options: RouteOptions) -> Decimal:
    """No route between the mints returns more output base units per input base unit, at any
    size (0 when none exists)."""
    search = _Search(pools, options, 0)
    paths = token_paths(pools, mint_in, mint_out, options)
    return max((search.bound(p, 1) for p in paths), default=Decimal(0))


def route_exact_in(
    pools: PoolsByPair,
    token_in: Token,
    token_out: Token,
    amount_in: int,
    now_ts: int,
    options: RouteOptions,
) -> Decision | None:
    """The route with the highest output for `amount_in`; None when nothing can fill it."""
    mint_in, mint_out = token_in.mint, token_out.mint
    search = _Search(pools, options, now_ts)
    quotes = search.direct_quotes(mint_in, mint_out, amount_in)
    single = max(quotes, key=lambda q: q.amount_out, default=None)
    best = None if single is None else single_plan(single, mint_in, mint_out)
    paths = token_paths(pools, mint_in, mint_out, options)
    ranked = sorted(((search.bound(p, amount_in), p) for p in paths), reverse=True)
    for bound, path in ranked:
        if best is not None and bound <= best.amount_out:
            break  # no later path can beat it either: they are sorted by bound
        plan = search.route_on(path, amount_in)
        if plan is not None and (best is None or plan.amount_out > best.amount_out):
            best = plan
    if best is None:
        return None
    return explained(best, single, quotes, token_in, token_out, options)


def explained(
    plan: RoutePlan,
    single: VenueQuote | None,
    quotes: list[VenueQuote],
    token_in: Token,
    token_out: Token,
    options: RouteOptions,
) -> Decision:
    """The decision for `plan`, with the venues' best direct quotes and the reason."""
    ranked = best_per_venue(quotes)
    legs = plan.legs
    if single is None or len(legs) > 1 or legs[0].pool is not single.pool:
        return Decision(plan, single, ranked, _reason(plan, single, token_in, token_out))
    if plan.exact_out:
        ranked = sorted(_cheapest_per_venue(quotes), key=lambda q: q.amount_in)
        return Decision(plan, single, ranked, _exact_out_reason(ranked, token_in))
    quoted = {q.dex for q in quotes}
    failed = {v: "no pool can fill it" for v in sorted(options.dexes) if v not in quoted}
    route = choose_route(ranked, token_out, failed)
    assert route is not None  # `single` is among the quotes
    return Decision(plan, single, ranked, route.reason)


def _cheapest_per_venue(quotes: list[VenueQuote]) -> list[VenueQuote]:
    best: dict[str, VenueQuote] = {}
    for q in quotes:
        if q.dex not in best or q.amount_in < best[q.dex].amount_in:
            best[q.dex] = q
    return list(best.values())


def _exact_out_reason(ranked: list[VenueQuote], token_in: Token) -> str:
    chosen = ranked[0]
    name = f"{VENUE_NAMES[chosen.dex]} {chosen.pool.kind}"
    if len(ranked) == 1:
        return f"{name} costs {_human(token_in, chosen.amount_in)}; only venue able to fill it"
    other = ranked[1]
    saved = Decimal((other.amount_in - chosen.amount_in) * 100) / Decimal(other.amount_in)
    return (
        f"{name} costs {_human(token_in, chosen.amount_in)} vs {VENUE_NAMES[other.dex]} "
        f"{other.pool.kind} {_human(token_in, other.amount_in)} "
        f"(-{saved.quantize(Decimal('0.01'))}% net of fees and price impact)"
    )


def single_plan(q: VenueQuote, mint_in: str, mint_out: str, exact_out: bool = False) -> RoutePlan:
    """The one-leg route through `q`'s pool."""
    return RoutePlan(((Leg.of(q, mint_in, mint_out),),), exact_out)


def _reason(plan: RoutePlan, single: VenueQuote | None, token_in: Token, token_out: Token) -> str:
    """One line for a split or multi-hop route: its shape and what it gains."""
    shape = []
    if plan.is_multi_hop:
        via = [_symbol(hop[0].mint_out) for hop in plan.hops[:-1]]
        shape.append(f"through {' → '.join(via)}")
    if plan.is_split:
        shape.append(f"split over {max(len(h) for h in plan.hops)} pools")
    what = ", ".join(shape) + f" ({len(plan.legs)} legs)"
    if plan.exact_out:
        amount = (
            f"costs {_human(token_in, plan.amount_in)} for {_human(token_out, plan.amount_out)}"
        )
    else:
        amount = f"returns {_human(token_out, plan.amount_out)}"
    if single is None:
        return f"{what} {amount}; no direct pool can fill it"
    gain = Decision(plan, single).improvement_bps.quantize(Decimal("0.01"))
    return (
        f"{what} {amount}: +{gain} bps over the best single pool "
        f"({VENUE_NAMES[single.dex]} {single.pool.kind})"
    )


def _human(token: Token, amount: int) -> str:
    return f"{dec_str(from_base_units(token, amount))} {token.symbol}"


def _symbol(mint: str) -> str:
    return next((t.symbol for t in TOKENS if t.mint == mint), mint[:4])
