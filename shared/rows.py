"""Typed rows: what the order queries return, instead of records read by string key.

Each query selects exactly these columns in this order (`OrderRow.COLUMNS`), so a row is built
positionally and a column added by a migration shows up here or nowhere.
"""

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

import asyncpg


class _Row:
    """A row built from a record of exactly its fields, in order (`COLUMNS`, set below)."""

    __slots__ = ()
    COLUMNS: ClassVar[str]

    @classmethod
    def of(cls, record: asyncpg.Record) -> Self:
        return cls(*record)


@dataclass(frozen=True, slots=True)
class OrderRow(_Row):
    """One row of `orders` (migrations 001-006). Amounts are integer base units (numeric);
    an exact-out order has `exact_amount_out` and no `amount_in` until it fills."""

    id: uuid.UUID
    type: str
    payload: dict[str, Any]
    status: str
    token_in: str
    token_out: str
    amount_in: Decimal | None
    slippage_bps: int
    client_order_id: str | None
    limit_price: Decimal | None
    expires_at: datetime | None
    dex_chosen: str | None
    pool: str | None
    quote_price: Decimal | None
    min_amount_out: Decimal | None
    executed_price: Decimal | None
    amount_out: Decimal | None
    fee_amount: Decimal | None
    tx_hash: str | None
    tx_base64: str | None
    last_valid_block_height: int | None
    tx_pending: bool
    slot: int | None
    attempts: int
    runs: int
    last_seq: int
    last_error: str | None
    error_code: str | None
    created_at: datetime
    updated_at: datetime
    max_price: Decimal | None
    triggered_at: datetime | None
    trigger_reason: str | None
    runs_at_trigger: int
    accept_by: datetime | None
    account: str
    exact_amount_out: Decimal | None


@dataclass(frozen=True, slots=True)
class WaitingRow(_Row):
    """A limit or sniper order waiting for its trigger: what the index and expiry need."""

    id: uuid.UUID
    type: str
    token_in: str
    token_out: str
    amount_in: Decimal
    limit_price: Decimal | None
    expires_at: datetime | None
    payload: dict[str, Any]  # the route options the order executes with


@dataclass(frozen=True, slots=True)
class StaleRow(_Row):
    """An open order nobody has touched for a while (the sweeper's input)."""

    id: uuid.UUID
    type: str
    status: str
    attempts: int
    updated_at: datetime
    idle_s: float


for _cls in (OrderRow, WaitingRow, StaleRow):
    _cls.COLUMNS = ", ".join(f.name for f in fields(_cls))
