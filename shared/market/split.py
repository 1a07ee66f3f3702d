"""Splitting one swap across the pools of a pair so that the total net output is highest.

Every pool's output is a concave function of its input (constant product; DLMM bins at falling
prices with fees that only grow), so the best allocation gives each pool input until their
marginal outputs are equal. `split_exact_in` finds it with exact integer quotes: a greedy pass
that hands the input out in equal chunks, each to the pool that pays most for it, then local
moves of halving size between pairs of pools while any move pays. It never returns less than
the best single pool (it compares, and keeps the single pool when the split is not better).
"""

from collections.abc import Sequence
from decimal import Decimal

from shared.market.pools import Pool
from shared.market.routing import MAX_PRICE_IMPACT_PCT, VenueQuote
from shared.market.types import InsufficientLiquidity, SwapQuote

CHUNKS = 32  # the greedy pass's granularity: 1/32 of the input
REFINE_LEVELS = 6  # local moves down to 1/2048 of the input
MAX_MOVES_PER_LEVEL = 8
MIN_LEG_BPS = 100  # a leg of less than 1 % of the hop is folded into the others


class Curves:
    """Exact outputs of each pool of one hop at the amounts asked for, each computed once (a
    route search asks for the same amounts again and again)."""

    def __init__(self, pools: Sequence[Pool], mint_in: str, now_ts: int) -> None:
        self.pools, self.mint_in, self.now_ts = pools, mint_in, now_ts
        self._seen: list[dict[int, SwapQuote | None]] = [{} for _ in pools]
        self._rates: list[Decimal | None] = [None] * len(pools)

    def rate(self, i: int) -> Decimal:
        """Pool i's rate bound (`Pool.max_rate`); raises InsufficientLiquidity if it has none."""
        rate = self._rates[i]
        if rate is None:
            rate = self._rates[i] = self.pools[i].max_rate(self.mint_in)
        return rate

    def fill(self, i: int, amount: int) -> VenueQuote | None:
        """Pool i's quote for `amount` as a fill, or None when it cannot fill it usefully."""
        q = self.quote(i, amount)
        return None if q is None else _fill(self.pools[i], q)

    def quote(self, i: int, amount: int) -> SwapQuote | None:
        """Pool i's quote for `amount`, or None when it cannot fill it usefully."""
        seen = self._seen[i]
        if amount not in seen:
            try:
                q = self.pools[i].quote(self.mint_in, amount, self.now_ts)
                seen[amount] = None if q.price_impact_pct > MAX_PRICE_IMPACT_PCT else q
            except InsufficientLiquidity:
                seen[amount] = None
        return seen[amount]

    def out(self, i: int, amount: int) -> int | None:
        """Pool i's output for `amount` (0 for nothing), None when it cannot fill it."""
        if amount == 0:
            return 0
        q = self.quote(i, amount)
        return None if q is None else q.amount_out

    def gain(self, i: int, have: int, more: int) -> int | None:
        """What `more` input adds to pool i's output on top of `have`; None if it cannot."""
        after, before = self.out(i, have + more), self.out(i, have)
        return None if after is None or before is None else after - before

    def total(self, alloc: list[int]) -> int | None:
        outs = [self.out(i, a) for i, a in enumerate(alloc)]
        return None if any(o is None for o in outs) else sum(o or 0 for o in outs)


def best_single(curves: Curves, amount: int) -> VenueQuote | None:
    """The pool with the highest output for the whole amount, or None if none can fill it."""
    i = _best_index(curves, amount)
    if i is None:
        return None
    q = curves.quote(i, amount)
    assert q is not None  # _best_index picks a pool that can fill it
    return _fill(curves.pools[i], q)


def _fill(pool: Pool, q: SwapQuote) -> VenueQuote:
    return VenueQuote(pool, q.amount_in, q.amount_out, q.fee_amount, q.price_impact_pct)


def _best_index(curves: Curves, amount: int) -> int | None:
    outs = [(out, i) for i in range(len(curves.pools)) if (out := curves.out(i, amount))]
    return max(outs)[1] if outs else None


def split_exact_in(curves: Curves, amount: int, max_splits: int) -> list[VenueQuote]:
    """The allocation of `amount` over at most `max_splits` of the pools with the highest
    total output, as fills whose inputs sum to `amount`; [] when no allocation can fill it.
    One fill when no split beats the best single pool."""
    pools = curves.pools
    single = best_single(curves, amount)
    fills = [single] if single is not None else []
    if len(pools) < 2 or max_splits < 2 or amount < CHUNKS or _single_is_best(curves, amount):
        return fills
    alloc = _greedy(curves, amount)
    if alloc is None:
        return fills
    _refine(curves, alloc, amount // CHUNKS)
    _prune(curves, alloc, amount, max_splits)
    total = curves.total(alloc)
    if total is None or (single is not None and total <= single.amount_out):
        return fills
    return [
        _fill(pools[i], q)
        for i, a in enumerate(alloc)
        if a and (q := curves.quote(i, a)) is not None
    ]


def _single_is_best(curves: Curves, amount: int) -> bool:
    """True when moving even one chunk off the best pool cannot pay: the best pool's last
    chunk earns at least what any other pool could ever pay for it (its rate bound). For
    small orders this settles the question with one extra quote."""
    i = _best_index(curves, amount)
    if i is None:
        return False
    chunk = amount // CHUNKS
    last = curves.gain(i, amount - chunk, chunk)
    if last is None:
        return False
    try:
        return all(last >= chunk * curves.rate(j) for j in range(len(curves.pools)) if j != i)
    except InsufficientLiquidity:  # a pool with nothing to give: let the search find out
        return False


def _greedy(curves: Curves, amount: int) -> list[int] | None:
    """Hand `amount` out in CHUNKS near-equal chunks, each to the pool whose output it raises
    most; None if some chunk fits no pool."""
    alloc = [0] * len(curves.pools)
    base, extra = divmod(amount, CHUNKS)
    for n in range(CHUNKS):
        chunk = base + (1 if n < extra else 0)
        gains = [(curves.gain(i, a, chunk), i) for i, a in enumerate(alloc)]
        usable = [(g, i) for g, i in gains if g is not None]
        if not usable:
            return None
        alloc[max(usable)[1]] += chunk
    return alloc


def _refine(curves: Curves, alloc: list[int], chunk: int) -> None:
    """Move input between pairs of pools in halving steps while a move raises the total."""
    step = chunk // 2
    for _ in range(REFINE_LEVELS):
        if step < 1:
            return
        for _ in range(MAX_MOVES_PER_LEVEL):
            move = _best_move(curves, alloc, step)
            if move is None:
                break
            src, dst = move
            alloc[src] -= step
            alloc[dst] += step
        step //= 2


def _best_move(curves: Curves, alloc: list[int], step: int) -> tuple[int, int] | None:
    best, found = 0, None
    for src, have in enumerate(alloc):
        if have < step:
            continue
        lost = curves.gain(src, have - step, step)
        if lost is None:
            continue
        for dst, got in enumerate(alloc):
            if dst == src:
                continue
            won = curves.gain(dst, got, step)
            if won is not None and won - lost > best:
                best, found = won - lost, (src, dst)
    return found


def _prune(curves: Curves, alloc: list[int], amount: int, max_splits: int) -> None:
    """Fold legs that are too small to be worth an instruction (or beyond `max_splits`) into
    the pool that pays most for their input, smallest first."""
    while True:
        legs = sorted((a, i) for i, a in enumerate(alloc) if a)
        if len(legs) <= 1:
            return
        smallest, i = legs[0]
        if len(legs) <= max_splits and smallest * 10_000 >= amount * MIN_LEG_BPS:
            return
        gains = [(curves.gain(j, alloc[j], smallest), j) for _, j in legs[1:]]
        usable = [(g, j) for g, j in gains if g is not None]
        if not usable:
            return
        alloc[max(usable)[1]] += smallest
        alloc[i] = 0
