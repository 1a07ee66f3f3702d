"""Decimals on the wire: the one strict grammar every amount and price is read with, and the
plain notation every amount and price is written in.

Python's `Decimal()` reads far more than a client should send: `"1_000"`, `" 1 "`, Arabic-Indic
digits, and exponents of any size (`"1e-999999999"` is a valid Decimal whose exact rational
value has a billion-digit denominator: converting it pinned a CPU for minutes). Here a decimal
is ASCII digits with at most one point and an optional exponent, and both its length and its
exponent are bounded *before* any arithmetic is done with it, so every later step (comparison,
scaling, conversion to base units) works on a number of at most a few dozen digits.
"""

import re
from decimal import Decimal

# At most this many characters in a decimal string or a JSON number literal: room for any
# real amount (a u64 of base units is 20 digits, plus a point and leading zeros) and no more.
MAX_DECIMAL_CHARS = 40
# The exponent of the stored digits (`Decimal.as_tuple().exponent`) stays within ± this: far
# past any token's decimals or any price's scale, and far below what costs time to compute.
MAX_DECIMAL_EXPONENT = 40

_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?([0-9]+))?", re.ASCII)
GRAMMAR = "digits with at most one point and an optional exponent, e.g. 1.5 or 2e3"


class DecimalSyntaxError(ValueError):
    """The value is not a decimal in the wire grammar (or is out of its bounds)."""


def parse_decimal(value: object) -> Decimal:
    """Read a non-negative decimal from a JSON value: a string in the grammar above, an int,
    or a `Decimal` (how JSON numbers with a point or exponent are decoded). Costs O(length)
    and never more: nothing is computed before the bounds are checked."""
    if isinstance(value, str):
        if len(value) > MAX_DECIMAL_CHARS:
            raise DecimalSyntaxError(f"at most {MAX_DECIMAL_CHARS} characters")
        match = _DECIMAL.fullmatch(value)
        if match is None:
            raise DecimalSyntaxError(f"expected a decimal: {GRAMMAR}")
        if match.group(1) is not None and len(match.group(1)) > 3:  # refused unread
            raise DecimalSyntaxError("exponent out of range")
        number = Decimal(value)
    elif isinstance(value, bool):  # a bool is an int to Python, never an amount to a client
        raise DecimalSyntaxError("expected a number or a decimal string, not a boolean")
    elif isinstance(value, int):
        if not 0 <= value < 10**MAX_DECIMAL_CHARS:
            raise DecimalSyntaxError("out of range")
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    else:
        raise DecimalSyntaxError("expected a number or a decimal string")
    return _bounded(number)


def _bounded(number: Decimal) -> Decimal:
    if not number.is_finite():
        raise DecimalSyntaxError("must be finite")
    sign, digits, exponent = number.as_tuple()
    if sign:
        raise DecimalSyntaxError("must not be negative")
    assert isinstance(exponent, int)  # finite, checked above
    if len(digits) > MAX_DECIMAL_CHARS:
        raise DecimalSyntaxError(f"at most {MAX_DECIMAL_CHARS} digits")
    if not -MAX_DECIMAL_EXPONENT <= exponent <= MAX_DECIMAL_EXPONENT:
        raise DecimalSyntaxError("exponent out of range")
    return number


def decimal_places(number: Decimal) -> int:
    """How many digits after the point `number` really has (`1.50` → 1, `2e3` → 0), exactly:
    `normalize()` would round to the context's precision first."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if trailing_zeros == len(digits):  # zero
        return 0
    return max(0, -(exponent + trailing_zeros))


def dec_str(value: Decimal) -> str:
    """`Decimal("100.000000000")` → `"100"`, `Decimal("1E+2")` → `"100"`, `0.0018` stays."""
    text = format(value.normalize(), "f")
    return text
