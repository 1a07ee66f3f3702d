"""Decimal formatting for the wire: plain notation, no trailing zeros."""

from decimal import Decimal


def dec_str(value: Decimal) -> str:
    """`Decimal("100.000000000")` → `"100"`, `Decimal("1E+2")` → `"100"`, `0.0018` stays."""
    text = format(value.normalize(), "f")
    return text
