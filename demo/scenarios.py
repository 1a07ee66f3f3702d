"""The optional orders of `--advanced`: a limit order just above the market and a sniper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from solders.keypair import Keypair

from demo.client import Options, error_parts
from demo.orders import OrderSpec, best_quote_price, limit_price, trigger_expiry_s

# Each builder prepares one optional order type; a string result says why it was skipped.
AdvancedBuilder = Callable[[httpx.AsyncClient, Options], Awaitable[OrderSpec | str]]


async def limit_spec(client: httpx.AsyncClient, options: Options) -> OrderSpec | str:
    params = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
    response = await client.get("/api/quotes", params=params)
    if response.status_code != 200:
        code, _ = error_parts(response)
        return f"limit order skipped: no quote from the server ({response.status_code} {code})"
    best = best_quote_price(response.json())
    if best is None:
        return "limit order skipped: the quote carried no price"
    extra = {
        "limitPrice": limit_price(best),
        "expiresInSeconds": trigger_expiry_s(options.timeout_s),
    }
    return OrderSpec("limit", "SOL", "USDC", "1", extra=extra, optional=True)


async def sniper_spec(client: httpx.AsyncClient, options: Options) -> OrderSpec | str:
    """A sniper on a token that does not exist yet; its launch follows once it is waiting."""
    mint = str(Keypair().pubkey())
    extra = {"tokenOut": mint, "expiresInSeconds": trigger_expiry_s(options.timeout_s)}
    return OrderSpec("sniper", "SOL", "MOON", "0.5", extra=extra, optional=True, launch_mint=mint)


ADVANCED_BUILDERS: tuple[AdvancedBuilder, ...] = (limit_spec, sniper_spec)


async def advanced_specs(
    client: httpx.AsyncClient, options: Options, say: Callable[[str], None]
) -> list[OrderSpec]:
    specs = []
    for build in ADVANCED_BUILDERS:
        result = await build(client, options)
        if isinstance(result, OrderSpec):
            specs.append(result)
        else:
            say(result)
    return specs
