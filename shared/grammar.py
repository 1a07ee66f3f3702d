"""The request grammar as JSON Schema: the patterns and bounds the validators enforce, written
out for the OpenAPI document from the same constants, so that the schema describes what the
API accepts and schema-driven fuzzing (schemathesis) finds no schema-valid request it refuses.

Where JSON Schema cannot say a rule, the schema says less than is accepted, never more: a
value may also be written with an exponent (`2e3`), or as a JSON number with a fraction, and
is then read exactly (`shared.numbers`), but the patterns show the plain notation only.
Mints use the custom format `solana-pubkey` (base58 of exactly 32 bytes), which a pattern
cannot express; the pattern beside it is the necessary shape.
"""

import re
from typing import Any

from shared.market.router import MAX_HOPS, MAX_SPLITS, hops_needed
from shared.market.tokens import RESERVED_ADDRESSES, TOKENS, Token
from shared.numbers import MAX_DECIMAL_CHARS
from shared.routewire import VENUES

U64_MAX = 2**64 - 1
MAX_AMOUNT_HUMAN_DIGITS = 12  # amounts below 10**12 human units (and within a u64)
MAX_PRICE_DIGITS = 15  # prices below 10**15
MAX_PRICE_PLACES = 18
MAX_EXPIRY_S = 30 * 24 * 3600
MAX_TEXT = 64  # clientOrderId, token fields
# NUL, C0 and C1 control characters and lone surrogates (which no UTF-8 column can store).
# The schema's pattern leaves the surrogates out: regex engines that validate JSON Schema
# (Rust's, for one) reject a surrogate range, and a valid UTF-8 document cannot carry one.
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
NO_CONTROL_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
BASE58_PATTERN = "^[1-9A-HJ-NP-Za-km-z]{32,44}$"
PUBKEY_FORMAT = "solana-pubkey"
# Printable ASCII without surrounding spaces (servers strip those from header values).
IDEMPOTENCY_KEY_PATTERN = "^[!-~](?:[ -~]{0,253}[!-~])?$"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN.strip("^$"), re.ASCII)


def amount_digits(decimals: int) -> int:
    """Integer digits an amount of a token with these decimals may have (human units)."""
    return min(MAX_AMOUNT_HUMAN_DIGITS, len(str(U64_MAX // 10**decimals)) - 1)


def positive_decimal_pattern(places: int, int_digits: int, min_places: int | None = None) -> str:
    """Plain-notation decimals in [10**-min_places, 10**int_digits) with at most `places`
    significant fractional digits (leading and trailing zeros allowed); `min_places` defaults
    to `places`, i.e. any positive value."""
    lead = places if min_places is None else min_places
    whole = f"0*[1-9][0-9]{{0,{int_digits - 1}}}(?:\\.[0-9]{{0,{places}}}0*)?"
    fractions = "|".join(
        f"0{{{zeros}}}[1-9][0-9]{{0,{places - 1 - zeros}}}" for zeros in range(lead)
    )
    return f"^(?:{whole}|0*\\.(?:{fractions})0*)$"


def positive_decimal_schema(
    places: int, int_digits: int, description: str, min_places: int | None = None
) -> dict[str, Any]:
    return {
        "anyOf": [
            {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_DECIMAL_CHARS,
                "pattern": positive_decimal_pattern(places, int_digits, min_places),
            },
            {"type": "integer", "minimum": 1, "maximum": 10**int_digits - 1},
        ],
        "description": description
        + f"; a decimal string (digits, at most one point, at most {MAX_DECIMAL_CHARS}"
        " characters; an exponent such as 2e3 is also read) or a JSON number, read exactly",
    }


def _any_case(symbol: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in symbol)


def token_pattern(tokens: list[Token]) -> str:
    """Each token's symbol in any ASCII case, or its exact mint."""
    names = [alt for t in tokens for alt in (_any_case(t.symbol), t.mint)]
    return f"^(?:{'|'.join(names)})$"


def text_schema(max_length: int, description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "maxLength": max_length,
        "pattern": NO_CONTROL_PATTERN,
        "description": description,
    }


def new_mint_schema(description: str) -> dict[str, Any]:
    """A base58 address that is not a listed token's mint nor a program's address."""
    taken = sorted({t.mint for t in TOKENS} | RESERVED_ADDRESSES)
    return {
        "type": "string",
        "format": PUBKEY_FORMAT,
        "pattern": BASE58_PATTERN,
        "not": {"enum": taken},
        "description": description,
    }


def _amount(token_decimals: int, whose: str = "tokenIn") -> dict[str, Any]:
    return positive_decimal_schema(
        token_decimals, amount_digits(token_decimals), f"human units of {whose}, > 0"
    )


PRICE_SCHEMA = positive_decimal_schema(MAX_PRICE_PLACES, MAX_PRICE_DIGITS, "a price, > 0")
SLIPPAGE_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 5000, "default": 50}
EXPIRY_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRY_S}
CLIENT_ORDER_ID_SCHEMA = text_schema(MAX_TEXT, "optional, echoed back; no control characters")
_VENUE_LIST: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "enum": list(VENUES)},
    "uniqueItems": True,
}
DEXES_SCHEMA = _VENUE_LIST | {"minItems": 1, "maxItems": len(VENUES)}
EXCLUDE_DEXES_SCHEMA = _VENUE_LIST | {"maxItems": len(VENUES) - 1}


def _route_options(min_hops: int) -> dict[str, Any]:
    """The route options' schemas for a pair that needs `min_hops` intermediate tokens. The
    variants leave `excludeDexes` out: an order gives it or `dexes`, never both, which JSON
    Schema can say only with `not` (or twice the variants); the schema says less than is
    accepted, never more."""
    direct_only = {"type": "boolean"} if min_hops == 0 else {"type": "boolean", "enum": [False]}
    return {
        "onlyDirectRoutes": direct_only | {"default": False},
        "dexes": DEXES_SCHEMA,
        "maxHops": {"type": "integer", "minimum": min_hops, "maximum": MAX_HOPS, "default": 2},
        "maxSplits": {"type": "integer", "minimum": 1, "maximum": MAX_SPLITS, "default": 3},
    }


def _variant(
    order_type: str,
    tokens_in: list[Token],
    token_out: dict[str, Any],
    amount: tuple[str, dict[str, Any]] | None = None,
    min_hops: int = 0,
) -> dict[str, Any]:
    """One order shape: its type, tokenIn's tokens, tokenOut's schema, and which amount it
    gives (amountIn in tokenIn's decimals unless `amount` says otherwise)."""
    field, amount_schema = amount or ("amountIn", _amount(tokens_in[0].decimals))
    properties: dict[str, Any] = {
        "type": {"type": "string", "enum": [order_type]},
        "tokenIn": {"type": "string", "pattern": token_pattern(tokens_in)},
        "tokenOut": token_out,
        field: amount_schema,
        "slippageBps": SLIPPAGE_SCHEMA,
        "clientOrderId": CLIENT_ORDER_ID_SCHEMA,
    } | _route_options(min_hops)
    required = ["tokenIn", "tokenOut", field]
    if order_type == "limit":
        properties |= {"limitPrice": PRICE_SCHEMA, "expiresInSeconds": EXPIRY_SCHEMA}
        required += ["type", "limitPrice"]
    elif order_type == "sniper":
        # A launched token trades on a Raydium CPMM pool only.
        properties |= {
            "maxPrice": PRICE_SCHEMA,
            "expiresInSeconds": EXPIRY_SCHEMA,
            "dexes": {"enum": [["raydium"], ["raydium", "meteora"], ["meteora", "raydium"]]},
        }
        required += ["type"]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _reachable(token: Token, hops: int, into: bool = False) -> list[Token]:
    """The listed tokens a route from `token` (to it, with `into`) reaches with `hops`
    intermediate tokens and no fewer."""
    return [
        t
        for t in TOKENS
        if t is not token
        and hops_needed(*((t.mint, token.mint) if into else (token.mint, t.mint))) == hops
    ]


def order_schema() -> dict[str, Any]:
    """The JSON Schema of an order (the POST body and the WebSocket's first message): one
    variant per order type, tokenIn and the intermediate tokens a route needs, each naming the
    tokens tokenIn reaches that way and the amounts its decimals allow; exact-out (amountOut)
    variants per tokenOut, naming the tokens with a pool against it."""
    variants = []
    for order_type in ("market", "limit"):
        for token in TOKENS:
            # Pairs a route joins through one or two intermediate tokens share a variant that
            # asks for maxHops 2 (one would do for some: the schema says less, never more).
            direct = _reachable(token, 0)
            indirect = [t for t in TOKENS if t is not token and t not in direct]
            for partners, hops in ((direct, 0), (indirect, MAX_HOPS)):
                if partners:
                    out = {"type": "string", "pattern": token_pattern(partners)}
                    variants.append(_variant(order_type, [token], out, min_hops=hops))
    for token in TOKENS:
        sellers = _reachable(token, 0, into=True)
        out = {"type": "string", "pattern": token_pattern([token])}
        amount = ("amountOut", _amount(token.decimals, "tokenOut"))
        variants.append(_variant("market", sellers, out, amount))
    for decimals in sorted({t.decimals for t in TOKENS}):
        same = [t for t in TOKENS if t.decimals == decimals]
        target = new_mint_schema("the mint of a token that has not launched yet")
        variants.append(_variant("sniper", same, target))
    return {
        "title": "OrderCreate",
        "description": "An order. tokenIn and tokenOut are a symbol (any case) or a mint, and a "
        "route must join them within maxHops intermediate tokens (SOL, USDC, USDT); amountIn "
        "has at most tokenIn's decimals, or, for an exact-out market order, amountOut at most "
        "tokenOut's (a pool must trade the pair); limitPrice is for limit orders, maxPrice for "
        "sniper orders, expiresInSeconds for either; dexes or excludeDexes, not both.",
        "type": "object",
        "required": ["tokenIn", "tokenOut"],
        "properties": {
            "type": {"type": "string", "enum": ["market", "limit", "sniper"], "default": "market"},
            "tokenIn": {"type": "string", "description": "symbol or base58 mint"},
            "tokenOut": {"type": "string", "description": "symbol or base58 mint"},
            "amountIn": {"description": "human units of tokenIn: a decimal string or number"},
            "amountOut": {"description": "exact-out market orders: human units of tokenOut"},
            "slippageBps": SLIPPAGE_SCHEMA,
            "limitPrice": {"description": "limit orders: minimum tokenOut per tokenIn"},
            "maxPrice": {"description": "sniper orders: at most tokenIn per tokenOut"},
            "expiresInSeconds": EXPIRY_SCHEMA,
            "clientOrderId": CLIENT_ORDER_ID_SCHEMA,
            "excludeDexes": EXCLUDE_DEXES_SCHEMA
            | {"description": "a venue the route may not use (instead of dexes)"},
        }
        | _route_options(0),
        "additionalProperties": False,
        "anyOf": variants,
    }


# POST /api/sim/launches. The bounds keep every launch's pool within a u64 on both sides:
# token reserve = liquidity / price * 10**6 <= 10**4 / 10**-9 * 10**6 = 10**19 < 2**64.
LAUNCH_PRICE_MIN_PLACES = 9  # priceSol >= 1e-9 SOL
LAUNCH_PRICE_DIGITS = 6  # priceSol < 10**6 SOL
LAUNCH_PRICE_PLACES = 18
LAUNCH_LIQUIDITY_DIGITS = 4  # liquiditySol < 10**4 SOL
LAUNCH_LIQUIDITY_PLACES = 9  # whole lamports
MAX_LAUNCH_SYMBOL = 10


def launch_schema() -> dict[str, Any]:
    return {
        "title": "LaunchCreate",
        "type": "object",
        "properties": {
            "mint": new_mint_schema(
                "base58 mint, random if unset; not a listed token's nor a program's address"
            ),
            "symbol": text_schema(MAX_LAUNCH_SYMBOL, "random if unset") | {"minLength": 1},
            "priceSol": positive_decimal_schema(
                LAUNCH_PRICE_PLACES,
                LAUNCH_PRICE_DIGITS,
                "SOL per token, from 1e-9 to below 10**6",
                LAUNCH_PRICE_MIN_PLACES,
            ),
            "liquiditySol": positive_decimal_schema(
                LAUNCH_LIQUIDITY_PLACES, LAUNCH_LIQUIDITY_DIGITS, "SOL in the pool, below 10**4"
            ),
        },
        "additionalProperties": False,
    }
