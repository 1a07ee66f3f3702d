"""Token table look-ups and exact base-unit conversions."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.market.tokens import (
    NATIVE_SOL_MINT,
    PAIRS,
    TOKENS,
    Token,
    from_base_units,
    price_from_base_units,
    price_to_base_units,
    resolve_token,
    to_base_units,
)

SOL = TOKENS[0]
USDC = TOKENS[1]


def _token(symbol: str) -> Token:
    token = resolve_token(symbol)
    assert token is not None
    return token


def test_table_is_consistent() -> None:
    assert len({t.symbol for t in TOKENS}) == len({t.mint for t in TOKENS}) == len(TOKENS) == 9
    assert SOL.symbol == "SOL" and SOL.mint == NATIVE_SOL_MINT and SOL.decimals == 9
    assert {t.symbol: t.decimals for t in TOKENS} == {
        "SOL": 9,
        "USDC": 6,
        "USDT": 6,
        "ETH": 8,
        "BTC": 8,
        "BONK": 5,
        "JUP": 6,
        "WIF": 6,
        "RAY": 6,
    }
    assert all(t.ref_price_usd > 0 for t in TOKENS)


def test_every_pair_is_listed_tokens_and_unique() -> None:
    assert len(PAIRS) == 11
    assert len(set(PAIRS) | {(q, b) for b, q in PAIRS}) == 2 * len(PAIRS)
    for base, quote in PAIRS:
        assert base != quote
        assert resolve_token(base) is not None and resolve_token(quote) is not None


def test_resolve_by_symbol_any_case_or_exact_mint() -> None:
    assert resolve_token("usdc") is USDC
    assert resolve_token("UsDc") is USDC
    assert resolve_token(USDC.mint) is USDC
    assert resolve_token(NATIVE_SOL_MINT) is SOL
    # Mints are case-sensitive base58: a lower-cased mint is a different (unknown) address.
    assert resolve_token(USDC.mint.lower()) is None
    assert resolve_token("DOGE") is None
    assert resolve_token("") is None


def test_to_base_units_examples() -> None:
    assert to_base_units(SOL, Decimal("1.5")) == 1_500_000_000
    assert to_base_units(USDC, Decimal("0.000001")) == 1
    assert to_base_units(_token("BONK"), Decimal("123.45678")) == 12_345_678
    assert to_base_units(SOL, Decimal("2E+3")) == 2_000_000_000_000
    # Trailing zeros past the token's decimals are still an exact amount.
    assert to_base_units(USDC, Decimal("1.00000000")) == 1_000_000


@pytest.mark.parametrize("amount", ["0.0000001", "1.0000000001", "NaN", "Infinity"])
def test_to_base_units_rejects_inexact_amounts(amount: str) -> None:
    with pytest.raises(ValueError):
        to_base_units(USDC, Decimal(amount))


def test_from_base_units_is_exact() -> None:
    assert from_base_units(SOL, 1_500_000_000) == Decimal("1.5")
    assert str(from_base_units(USDC, 1)) == "0.000001"
    huge = 10**40 + 1
    assert from_base_units(USDC, huge).as_integer_ratio() == (huge, 10**6)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TOKENS), st.integers(min_value=-(10**30), max_value=10**30))
def test_base_units_round_trip(token: Token, amount: int) -> None:
    assert to_base_units(token, from_base_units(token, amount)) == amount


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TOKENS), st.integers(min_value=0, max_value=10**24), st.data())
def test_decimal_round_trip_and_precision_limit(
    token: Token, units: int, data: st.DataObject
) -> None:
    human = Decimal(units).scaleb(-token.decimals)
    assert from_base_units(token, to_base_units(token, human)) == human
    extra_digit = data.draw(st.integers(min_value=1, max_value=9))
    too_precise = human + Decimal(extra_digit).scaleb(-token.decimals - 1)
    with pytest.raises(ValueError):
        to_base_units(token, too_precise)


def test_price_conversion() -> None:
    # 150 USDC per SOL = 150 * 10^6 micro-USDC per 10^9 lamports.
    assert price_to_base_units(SOL, USDC, Decimal("150")) == Decimal("0.15")
    assert price_from_base_units(SOL, USDC, Decimal("0.15")) == Decimal("150")
    bonk = _token("BONK")
    # 10^-5 SOL per BONK = 10^-5 * 10^9 lamports per 10^5 BONK base units.
    assert price_to_base_units(bonk, SOL, Decimal("0.00001")) == Decimal("0.1")
