"""SQL for orders and their events. Each function takes a connection and returns plain data."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from shared.apikeys import PUBLIC_ACCOUNT
from shared.db import Conn
from shared.models import TERMINAL_STATUSES, NewOrder
from shared.rows import OrderRow, StaleRow, WaitingRow

# Columns a status transition may set, with their SQL types: callers cannot inject SQL through
# field names, and one statement can carry a batch of transitions that set different columns.
_UPDATABLE = {
    "dex_chosen": "text",
    "pool": "text",
    "quote_price": "numeric",
    "min_amount_out": "numeric",
    "executed_price": "numeric",
    "amount_out": "numeric",
    "fee_amount": "numeric",
    "amount_in": "numeric",
    "tx_hash": "text",
    "tx_base64": "text",
    "last_valid_block_height": "bigint",
    "tx_pending": "boolean",
    "slot": "bigint",
    "attempts": "integer",
    "last_error": "text",
    "error_code": "text",
}
_TERMINAL = list(TERMINAL_STATUSES)

Row = asyncpg.Record
# SQLSTATE of a commit refused because it came after the order's `accept_by` (migration 004).
ACCEPT_DEADLINE_PASSED = "OE001"


async def insert_order(
    conn: Conn,
    order_id: uuid.UUID,
    order: NewOrder,
    accept_by: datetime | None = None,
    account: str = PUBLIC_ACCOUNT,
) -> tuple[datetime, dict[str, Any]]:
    """Insert the order and its `pending` event (seq 1) in one statement; returns
    (created_at, event). Nothing else comes back: decoding the whole new row is a measurable
    share of the API's CPU per order, for values the caller already has.

    With `accept_by`, the server refuses to commit the order after that moment (error
    `ACCEPT_DEADLINE_PASSED`, migration 004): the caller has stopped waiting by then."""
    expires_at = (
        None if order.expires_in_s is None else _now_utc() + timedelta(seconds=order.expires_in_s)
    )
    event_data = {k: v for k, v in order.payload.items() if k != "clientOrderId"}
    if order.type != "market":
        event_data["waiting"] = order.waiting_for()
    row = await conn.fetchrow(
        """
        WITH o AS (
            INSERT INTO orders (id, type, payload, status, token_in, token_out, amount_in,
                                slippage_bps, client_order_id, limit_price, expires_at, max_price,
                                last_seq, accept_by, account, exact_amount_out)
            VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $12, 1, $13, $14, $15)
            RETURNING *
        ), e AS (
            INSERT INTO order_events (order_id, seq, status, attempt, at, data)
            SELECT id, 1, 'pending', 0, created_at, $11 FROM o
            RETURNING at
        )
        SELECT o.created_at, e.at AS event_at FROM o, e
        """,
        order_id,
        order.type,
        order.payload,
        order.token_in.mint,
        order.token_out.mint,
        order.amount_in,
        order.slippage_bps,
        order.client_order_id,
        order.limit_price,
        expires_at,
        event_data,
        order.max_price,
        accept_by,
        account,
        order.amount_out,
    )
    assert row is not None
    event = event_message(order_id, 1, "pending", 0, row["event_at"], event_data)
    return row["created_at"], event


@dataclass(frozen=True, slots=True)
class Move:
    """One guarded status transition: see `transition`."""

    order_id: uuid.UUID
    status: str
    attempt: int
    data: dict[str, Any]
    allowed_from: tuple[str, ...]
    fields: dict[str, Any] = field(default_factory=dict)
    untriggered_only: bool = False
    fence: int | None = None

    def __post_init__(self) -> None:
        bad = set(self.fields) - _UPDATABLE.keys()
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")


# Each row of the batch names the columns it sets (`sets`); the others keep their values. $2
# repeats the ids so the planner looks the orders up by key (it cannot see into the JSON).
_BATCH_COLUMNS = ", ".join(f"{name} {kind}" for name, kind in _UPDATABLE.items())
_SET_NAMED = ", ".join(
    f"{name} = CASE WHEN '{name}' = ANY(i.sets) THEN i.{name} ELSE orders.{name} END"
    for name in _UPDATABLE
)
_TRANSITIONS_SQL = f"""
    WITH i AS (
        SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS i(
            n integer, id uuid, status text, allowed text[], attempt integer, data jsonb,
            fence integer, untriggered_only boolean, sets text[], {_BATCH_COLUMNS})
    ), o AS (
        UPDATE orders SET status = i.status, last_seq = orders.last_seq + 1, updated_at = now(),
            {_SET_NAMED}
        FROM i
        WHERE orders.id = ANY($2::uuid[]) AND orders.id = i.id AND orders.status = ANY(i.allowed)
          AND (i.fence IS NULL OR orders.runs = i.fence)
          AND NOT (i.untriggered_only AND orders.triggered_at IS NOT NULL)
        RETURNING i.n, orders.id, orders.last_seq AS seq, i.status, i.attempt, i.data,
                  clock_timestamp() AS at
    ), e AS (
        INSERT INTO order_events (order_id, seq, status, attempt, at, data)
        SELECT id, seq, status, attempt, at, data FROM o
    )
    SELECT n, seq, at FROM o
"""


def _sql_value(value: Any) -> Any:
    """JSON for a column value: numbers as strings, so no precision is lost on the way."""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return str(value)
    return value


async def transition_many(conn: Conn, moves: Sequence[Move]) -> list[dict[str, Any] | None]:
    """Apply guarded transitions and append their events, atomically, in one round trip.

    A move only applies when the order's current status is in its `allowed_from` (so a stale
    or duplicate worker cannot move an order backwards or past a terminal status), when
    `fence` (if given) is still the order's latest run (a run that stalled past its lease
    while another took over cannot move the order, or sign for it, any more), and, with
    `untriggered_only`, while no trigger has claimed the order (cancel and expiry). Returns
    each move's event message, or None where the guard refused it.
    """
    if not moves:
        return []
    batch = orjson.dumps(
        [
            {
                "n": n,
                "id": str(m.order_id),
                "status": m.status,
                "allowed": list(m.allowed_from),
                "attempt": m.attempt,
                "data": m.data,
                "fence": m.fence,
                "untriggered_only": m.untriggered_only,
                "sets": list(m.fields),
                **{name: _sql_value(value) for name, value in m.fields.items()},
            }
            for n, m in enumerate(moves)
        ]
    ).decode()
    results: list[dict[str, Any] | None] = [None] * len(moves)
    ids = [m.order_id for m in moves]
    for row in await conn.fetch(_TRANSITIONS_SQL, batch, ids):
        m = moves[row["n"]]
        results[row["n"]] = event_message(
            m.order_id, row["seq"], m.status, m.attempt, row["at"], m.data
        )
    return results


async def transition(
    conn: Conn,
    order_id: uuid.UUID,
    status: str,
    *,
    attempt: int,
    data: dict[str, Any],
    allowed_from: tuple[str, ...],
    fields: dict[str, Any] | None = None,
    untriggered_only: bool = False,
    fence: int | None = None,
) -> dict[str, Any] | None:
    """One `Move` (see `transition_many`): its event message, or None if the guard refused."""
    move = Move(
        order_id, status, attempt, data, allowed_from, fields or {}, untriggered_only, fence
    )
    return (await transition_many(conn, [move]))[0]


def event_message(
    order_id: uuid.UUID, seq: int, status: str, attempt: int, at: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    """The wire shape of an event: `{orderId, seq, status, at, attempt, ...details}`."""
    return {
        "orderId": str(order_id),
        "seq": seq,
        "status": status,
        "at": at.isoformat().replace("+00:00", "Z"),
        "attempt": attempt,
        **data,
    }


async def start_runs(conn: Conn, order_ids: Sequence[uuid.UUID]) -> list[OrderRow | None]:
    """Count one more job run of each order that may run now: unfinished, and (limit/sniper)
    triggered. None where there is nothing to do, and for an id repeated in the list (one run
    of an order per call, so no two runs share a fencing token)."""
    rows = await conn.fetch(
        "UPDATE orders SET runs = runs + 1 WHERE id = ANY($1::uuid[])"
        " AND status <> ALL($2::text[]) AND NOT (type <> 'market' AND triggered_at IS NULL)"
        f" RETURNING {OrderRow.COLUMNS}",
        list(order_ids),
        _TERMINAL,
    )
    by_id = {row.id: row for row in map(OrderRow.of, rows)}
    return [by_id.pop(order_id, None) for order_id in order_ids]


async def get_order(conn: Conn, order_id: uuid.UUID) -> OrderRow | None:
    row = await conn.fetchrow(f"SELECT {OrderRow.COLUMNS} FROM orders WHERE id = $1", order_id)
    return None if row is None else OrderRow.of(row)


async def get_own_order(conn: Conn, order_id: uuid.UUID, account: str) -> OrderRow | None:
    """The order if `account` owns it: another account's order is as absent as an unknown one."""
    row = await conn.fetchrow(
        f"SELECT {OrderRow.COLUMNS} FROM orders WHERE id = $1 AND account = $2", order_id, account
    )
    return None if row is None else OrderRow.of(row)


async def order_account(conn: Conn, order_id: uuid.UUID) -> str | None:
    account: str | None = await conn.fetchval("SELECT account FROM orders WHERE id = $1", order_id)
    return account


async def last_seqs(conn: Conn, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The seq of each order's latest stored event (orders that do not exist are left out)."""
    rows = await conn.fetch(
        "SELECT id, last_seq FROM orders WHERE id = ANY($1::uuid[])", list(order_ids)
    )
    return {row["id"]: row["last_seq"] for row in rows}


async def get_events(conn: Conn, order_id: uuid.UUID, after_seq: int = 0) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT seq, status, attempt, at, data FROM order_events"
        " WHERE order_id = $1 AND seq > $2 ORDER BY seq",
        order_id,
        after_seq,
    )
    return [
        event_message(order_id, r["seq"], r["status"], r["attempt"], r["at"], r["data"])
        for r in rows
    ]


async def list_orders(
    conn: Conn,
    account: str,
    status: str | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[OrderRow]:
    """An account's orders, newest first; `before` is the (created_at, id) keyset cursor of
    the previous page."""
    rows = await conn.fetch(
        f"""
        SELECT {OrderRow.COLUMNS} FROM orders
        WHERE account = $5 AND ($1::text IS NULL OR status = $1)
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
        ORDER BY created_at DESC, id DESC
        LIMIT $4
        """,
        status,
        before[0] if before else None,
        before[1] if before else None,
        limit,
        account,
    )
    return [OrderRow.of(r) for r in rows]


async def count_by_status(conn: Conn, account: str | None = None) -> dict[str, int]:
    """Orders per status (of one account, or of all)."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM orders WHERE $1::text IS NULL OR account = $1"
        " GROUP BY status",
        account,
    )
    return {r["status"]: r["n"] for r in rows}


async def count_by_venue(conn: Conn, account: str | None = None) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT dex_chosen, count(*) AS n FROM orders"
        " WHERE status = 'confirmed' AND dex_chosen IS NOT NULL"
        " AND ($1::text IS NULL OR account = $1) GROUP BY dex_chosen",
        account,
    )
    return {r["dex_chosen"]: r["n"] for r in rows}


async def count_runnable(conn: Conn, account: str) -> int:
    """An account's orders waiting for a worker (pending and not waiting on a trigger)."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM orders WHERE account = $1 AND status = 'pending'"
        " AND (type = 'market' OR triggered_at IS NOT NULL)",
        account,
    )
    return n


async def lock_open_orders(conn: Conn, account: str) -> int:
    """Take the account's open-orders lock for the current transaction, then count its open
    (non-terminal) orders. The count is a statement of its own, after the lock: its snapshot
    then includes every order committed by whoever held the lock before (READ COMMITTED)."""
    await conn.execute("SELECT pg_advisory_xact_lock(7151, hashtext($1))", account)
    n: int = await conn.fetchval(
        "SELECT count(*) FROM orders WHERE account = $1 AND status <> ALL($2::text[])",
        account,
        _TERMINAL,
    )
    return n


async def record_retry(
    conn: Conn, order_id: uuid.UUID, code: str, message: str, fence: int
) -> bool:
    """Note why an attempt failed before the next one; False if a newer run owns the order."""
    done = await conn.fetchval(
        "UPDATE orders SET last_error = $2, error_code = $3, tx_pending = false,"
        " updated_at = now() WHERE id = $1 AND runs = $4 RETURNING true",
        order_id,
        message,
        code,
        fence,
    )
    return bool(done)


async def claim_trigger(conn: Conn, order_id: uuid.UUID, reason: str) -> bool:
    """Mark a waiting order triggered; False if it was cancelled, expired or claimed already.

    Cancel and expiry guard on the same `triggered_at IS NULL`, so exactly one of them wins.
    """
    claimed = await conn.fetchval(
        "UPDATE orders SET triggered_at = clock_timestamp(), trigger_reason = $2,"
        " runs_at_trigger = runs, updated_at = now()"
        " WHERE id = $1 AND status = 'pending' AND triggered_at IS NULL RETURNING true",
        order_id,
        reason,
    )
    return bool(claimed)


async def rearm_trigger(conn: Conn, order_id: uuid.UUID, fence: int) -> bool:
    """Put a triggered limit order back to waiting (its price went away before it ran)."""
    done = await conn.fetchval(
        "UPDATE orders SET triggered_at = NULL, trigger_reason = NULL, updated_at = now()"
        " WHERE id = $1 AND status = 'pending' AND runs = $2 RETURNING true",
        order_id,
        fence,
    )
    return bool(done)


async def waiting_orders(conn: Conn, ids: list[uuid.UUID] | None = None) -> list[WaitingRow]:
    """Untriggered limit/sniper orders (all of them, or those among `ids`)."""
    rows = await conn.fetch(
        f"""
        SELECT {WaitingRow.COLUMNS} FROM orders
        WHERE status = 'pending' AND triggered_at IS NULL AND type <> 'market'
          AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))
        """,
        ids,
    )
    return [WaitingRow.of(r) for r in rows]


async def due_to_expire(conn: Conn, limit: int = 500) -> list[WaitingRow]:
    rows = await conn.fetch(
        f"""
        SELECT {WaitingRow.COLUMNS} FROM orders
        WHERE status = 'pending' AND triggered_at IS NULL AND expires_at IS NOT NULL
          AND expires_at <= now() AND type <> 'market'
        LIMIT $1
        """,
        limit,
    )
    return [WaitingRow.of(r) for r in rows]


async def lock_idempotency_key(conn: Conn, account: str, key: str) -> bool:
    """Take the account's key for the current transaction; False while another request holds it.

    Only a request that holds the key creates its order, and the key's row is written in the
    same transaction as the order, so a key never outlives an order that was not created.
    Keys are per account: two accounts using the same key do not meet."""
    return bool(
        await conn.fetchval(
            # No account name holds a "/": account/key pairs cannot collide.
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7150))",
            account,
            key,
        )
    )


async def idempotency_record(conn: Conn, account: str, key: str) -> Row | None:
    return await conn.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE account = $1 AND key = $2",
        account,
        key,
    )


async def remember_response(
    conn: Conn,
    account: str,
    key: str,
    request_hash: str,
    order_id: uuid.UUID,
    response: dict[str, Any],
) -> None:
    """The response an Idempotency-Key replays, stored with the order it created."""
    await conn.execute(
        """INSERT INTO idempotency_keys (account, key, request_hash, order_id, response)
           VALUES ($1, $2, $3, $4, $5)""",
        account,
        key,
        request_hash,
        order_id,
        response,
    )


async def forget_idempotency_keys(conn: Conn, older_than_h: int = 24) -> None:
    """Idempotency keys are remembered for a day."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
        older_than_h,
    )


async def stale_open_orders(conn: Conn, older_than_s: float, limit: int = 500) -> list[StaleRow]:
    """Orders not finished whose last change is older than `older_than_s` (sweeper input)."""
    rows = await conn.fetch(
        """
        SELECT id, type, status, attempts, updated_at,
               extract(epoch FROM now() - updated_at)::float8 AS idle_s FROM orders
        WHERE status <> ALL($1::text[]) AND updated_at < now() - make_interval(secs => $2)
          AND NOT (status = 'pending' AND type <> 'market' AND triggered_at IS NULL)
        ORDER BY updated_at LIMIT $3
        """,
        _TERMINAL,
        older_than_s,
        limit,
    )
    return [StaleRow.of(r) for r in rows]


def _now_utc() -> datetime:
    return datetime.now(UTC)
