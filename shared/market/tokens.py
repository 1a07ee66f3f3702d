"""The token list the simulated market trades, and conversions between human and base units.

Amounts on chain are integers in a token's smallest unit ("base units": lamports for SOL,
micro-USDC for USDC, ...). Everything in the market works in base units; these helpers are the
only place decimals are applied.
"""

from dataclasses import dataclass
from decimal import Decimal

NATIVE_SOL_MINT = "So11111111111111111111111111111111111111112"


@dataclass(frozen=True, slots=True)
class Token:
    """A tradable SPL token: its mint, its decimals and a reference USD price for seeding pools."""

    symbol: str
    name: str
    mint: str
    decimals: int
    ref_price_usd: Decimal


TOKENS: tuple[Token, ...] = (
    Token("SOL", "Solana", NATIVE_SOL_MINT, 9, Decimal("150")),
    Token("USDC", "USD Coin", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6, Decimal("1")),
    Token("USDT", "Tether USD", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6, Decimal("1")),
    Token(
        "ETH",
        "Ether (Wormhole)",
        "7vfCXTUXx5WJV5JADk17DUJ4ksgau7utNKj4b963voxs",
        8,
        Decimal("3000"),
    ),
    Token(
        "BTC",
        "Bitcoin (Wormhole)",
        "3NZ9JMVBmGAqocybic2c7LQCJScmgsAZ6vQqTDzcqmJh",
        8,
        Decimal("60000"),
    ),
    Token("BONK", "Bonk", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5, Decimal("0.00002")),
    Token("JUP", "Jupiter", "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN", 6, Decimal("0.9")),
    Token("WIF", "dogwifhat", "EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm", 6, Decimal("2")),
    Token("RAY", "Raydium", "4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R", 6, Decimal("2")),
)

# Listed markets as (base, quote) symbols; every pool in the simulation is one of these.
PAIRS: tuple[tuple[str, str], ...] = (
    ("SOL", "USDC"),
    ("SOL", "USDT"),
    ("USDC", "USDT"),
    ("ETH", "USDC"),
    ("ETH", "USDT"),
    ("BTC", "USDC"),
    ("BONK", "SOL"),
    ("JUP", "USDC"),
    ("WIF", "SOL"),
    ("RAY", "USDC"),
    ("JUP", "SOL"),
)

_LISTED_PAIRS = frozenset(frozenset(p) for p in PAIRS)
_BY_SYMBOL = {t.symbol.upper(): t for t in TOKENS}


def is_listed_pair(a: Token, b: Token) -> bool:
    """Whether pools trade this pair (in either direction)."""
    return frozenset((a.symbol, b.symbol)) in _LISTED_PAIRS


_BY_MINT = {t.mint: t for t in TOKENS}


# Tokens launched in the simulation (snipers' targets) all use this many decimals.
LAUNCH_DECIMALS = 6


def unlisted_token(mint: str, symbol: str | None = None) -> Token:
    """A token that is not (or not yet) in the list: a launch, or a sniper's target mint."""
    return Token(
        symbol or f"{mint[:4]}…{mint[-4:]}",
        symbol or "launched token",
        mint,
        LAUNCH_DECIMALS,
        Decimal(0),
    )


def resolve_token(symbol_or_mint: str) -> Token | None:
    """Return the token with this symbol (any ASCII case) or this exact mint address, else None.

    Only ASCII is upper-cased: `str.upper()` also maps look-alikes to ASCII letters (the long
    s U+017F to "S", the dotless i U+0131 to "I"), which would let another string name a token.
    """
    if not symbol_or_mint.isascii():
        return None
    return _BY_MINT.get(symbol_or_mint) or _BY_SYMBOL.get(symbol_or_mint.upper())


# Addresses that are never a token's mint: the programs and sysvars every transaction names.
# The System Program's address is 32 zero bytes, the "default" public key.
RESERVED_ADDRESSES = frozenset(
    {
        "11111111111111111111111111111111",  # System Program
        "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",  # SPL Token
        "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",  # SPL Token-2022
        "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL",  # Associated Token Account
        "ComputeBudget111111111111111111111111111111",  # Compute Budget
        "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",  # Memo
        "SysvarRent111111111111111111111111111111111",
        "SysvarC1ock11111111111111111111111111111111",
        "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8",  # Raydium AMM v4
        "CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C",  # Raydium CPMM
        "LBUZKhRxPF3XUpBCjp4YzTKgLccjZhTSDM9YuVaPwxo",  # Meteora DLMM
    }
)


def to_base_units(token: Token, amount: Decimal) -> int:
    """Convert a human amount (e.g. ``Decimal("1.5")`` SOL) to exact base units.

    Raises ValueError if the amount is not finite, has more fractional digits than the token
    supports (silently rounding a user's amount would trade a different size), or is absurdly
    large. The cost is linear in the amount's digits whatever its exponent: `1e-999999999`
    is refused without building 10**999999999.
    """
    if not amount.is_finite():
        raise ValueError(f"amount must be finite, got {amount}")
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    coefficient: int = int(Decimal((0, digits, 0)))  # exact: no context precision applies
    shift = exponent + token.decimals  # base units = coefficient * 10**shift
    if coefficient == 0:
        return 0
    if shift >= 0:
        if len(digits) + shift > _MAX_BASE_UNIT_DIGITS:
            raise ValueError(f"{amount} {token.symbol} is out of range")
        scaled: int = coefficient * 10**shift
    else:
        # Exact only if the last -shift digits are zeros, which needs -shift <= len(digits).
        if -shift > len(digits) or coefficient % 10**-shift:
            raise ValueError(
                f"{amount} has more than {token.decimals} decimal places for {token.symbol}"
            )
        scaled = coefficient // 10**-shift
    return -scaled if sign else scaled


# Far above any amount a token account can hold (a u64 has 20 digits), far below slow.
_MAX_BASE_UNIT_DIGITS = 80


def from_base_units(token: Token, amount: int) -> Decimal:
    """Convert base units to the exact human amount (no rounding: the result has the token's
    decimals as exponent, e.g. 1_500_000_000 lamports -> Decimal("1.500000000"))."""
    # Built from a string so no context precision applies, however large the amount.
    return Decimal(f"{amount}E-{token.decimals}")


def price_to_base_units(base: Token, quote: Token, price: Decimal) -> Decimal:
    """Turn a human price (quote per 1 base, e.g. 150 USDC per SOL) into the pool convention:
    quote base units per base base unit (150 USDC/SOL -> 0.15 micro-USDC per lamport)."""
    return price.scaleb(quote.decimals - base.decimals)


def price_from_base_units(base: Token, quote: Token, unit_price: Decimal) -> Decimal:
    """Inverse of `price_to_base_units`: quote per 1 base, in human units."""
    return unit_price.scaleb(base.decimals - quote.decimals)
