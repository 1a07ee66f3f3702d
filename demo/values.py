"""Reading the loosely typed values of event dicts, and writing decimals plainly."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


def to_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def to_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def text_of(value: object) -> str:
    return value if isinstance(value, str) else ""


def plain(value: Decimal) -> str:
    """A decimal as a plain string without exponent or trailing zeros (`5E+6` → `5000000`)."""
    return f"{value.normalize():f}"
