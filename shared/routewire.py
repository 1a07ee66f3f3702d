"""Route options on the wire: read from an order (or `/api/quotes`), checked against the pair,
and kept in the order's stored payload, where the worker reads them again.

The options are Jupiter's: `onlyDirectRoutes`, `dexes` / `excludeDexes` (venues), plus
`maxHops` (intermediate tokens a route may pass through, 0-2) and `maxSplits` (pools one hop
may be split over, 1-3). An order without them routes with the defaults, as orders stored
before they existed do.
"""

from collections.abc import Sequence
from typing import Any

from shared.errors import InvalidOrder
from shared.market.router import MAX_HOPS, MAX_SPLITS, RouteOptions, hops_needed
from shared.market.tokens import Token

VENUES: tuple[str, ...] = ("raydium", "meteora")
LAUNCH_VENUE = "raydium"  # launched tokens trade on a Raydium CPMM pool (shared.sim.launches)


def _refuse(field: str, message: str, detail: str) -> InvalidOrder:
    return InvalidOrder(f"{field}: {message}", [{"field": field, "message": detail}])


def route_options(
    only_direct: bool,
    dexes: Sequence[str] | None,
    exclude_dexes: Sequence[str] | None,
    max_hops: int,
    max_splits: int,
) -> RouteOptions:
    """The options, each already within its own bounds; refuses combinations that leave no
    venue (`dexes` with `excludeDexes`, or a venue named twice)."""
    if dexes is not None and exclude_dexes is not None:
        raise _refuse("excludeDexes", "give dexes or excludeDexes, not both", "not with dexes")
    for field, names in (("dexes", dexes), ("excludeDexes", exclude_dexes)):
        if names is not None and len(set(names)) != len(names):
            raise _refuse(field, "a venue is named twice", "duplicate venue")
    allowed = set(dexes or VENUES) - set(exclude_dexes or ())
    return RouteOptions(
        dexes=frozenset(allowed),
        max_hops=0 if only_direct else max_hops,
        max_splits=max_splits,
    )


def check_route(
    token_in: Token, token_out: Token, options: RouteOptions, exact_out: bool, sniper: bool
) -> None:
    """Refuse an order no route can serve under its options: a pair that needs more
    intermediate tokens than `maxHops` allows, an exact-out order on a pair without a pool
    of its own, or a sniper barred from the venue launches trade on."""
    if sniper:
        if LAUNCH_VENUE not in options.dexes:
            raise _refuse("dexes", "launched tokens trade on Raydium only", "must allow raydium")
        return
    needed = hops_needed(token_in.mint, token_out.mint)
    pair = f"{token_in.symbol}/{token_out.symbol}"
    if needed is None:
        raise _refuse("tokenOut", f"no route trades {pair}", f"no route from {token_in.symbol}")
    if exact_out and needed > 0:
        raise _refuse(
            "amountOut",
            f"exact-out orders need a pool that trades {pair}; give amountIn",
            "no direct pool",
        )
    if needed > options.max_hops:
        raise _refuse(
            "maxHops",
            f"no pool trades {pair}; a route needs {needed} intermediate token(s)",
            f"at least {needed} (and onlyDirectRoutes false)",
        )


def payload_options(options: RouteOptions, dexes: Sequence[str] | None) -> dict[str, Any]:
    """The options as the stored payload keeps them: only those that differ from the
    defaults, so an order that gives none stores what it stored before options existed."""
    stored: dict[str, Any] = {}
    if options.max_hops != MAX_HOPS:
        stored["maxHops"] = options.max_hops
    if options.max_splits != MAX_SPLITS:
        stored["maxSplits"] = options.max_splits
    if dexes is not None or options.dexes != frozenset(VENUES):
        stored["dexes"] = sorted(options.dexes)
    return stored


def stored_options(payload: dict[str, Any]) -> RouteOptions:
    """The route options of a stored order (`payload_options`); defaults for older orders."""
    return RouteOptions(
        dexes=frozenset(payload.get("dexes", VENUES)),
        max_hops=int(payload.get("maxHops", MAX_HOPS)),
        max_splits=int(payload.get("maxSplits", MAX_SPLITS)),
    )
