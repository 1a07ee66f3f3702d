"""One order's way through routing → building → submitted → confirmed, or to failed.

The order's state lives in PostgreSQL and every step is a guarded transition there, so a job
that runs twice, or after a crash, picks up where the order really is. A transaction is signed
and stored (building, `tx_pending`) before it is sent; a later run asks the cluster about that
signature before it signs anything new, so a swap never executes twice.
"""

import base64
import logging
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_CEILING
from typing import Any

from shared import queries, triggers
from shared.logs import ATTEMPT
from shared.market.plan import Decision
from shared.market.pools import SLIPPAGE_ERRORS, VENUE_NAMES
from shared.market.routing import MAX_PRICE_IMPACT_PCT, human_price
from shared.market.tokens import Token, from_base_units, unlisted_token
from shared.models import OPEN_STATUSES
from shared.numbers import dec_str
from shared.queries import Move
from shared.rows import OrderRow
from shared.sim import launches
from shared.sim.cluster import BlockhashNotFound, ClusterError, RpcTimeout, SignatureStatus
from shared.sim.execution import INSUFFICIENT_FUNDS
from shared.sim.transactions import SignedSwap, build_swap_transaction
from worker.engine import Engine
from worker.observe import RunObserver
from worker.routing import decide, describe, fills, swap_instructions

log = logging.getLogger(__name__)

COMPUTE_UNIT_PRICE = {"market": 50_000, "limit": 50_000, "sniper": 1_000_000}  # micro-lamports
_SLIPPAGE_NAMES = frozenset(SLIPPAGE_ERRORS.values())


class AttemptFailed(Exception):
    """An attempt ended without a fill; `retryable` says whether a new attempt may help."""

    def __init__(self, code: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.message, self.retryable = code, message, retryable


class Rearmed(Exception):
    """A triggered limit order whose price went away before it ran; it waits again."""


class Superseded(Exception):
    """Another run advanced the order first; this run stops without touching it."""


@dataclass(frozen=True, slots=True)
class RetryLater:
    """The order needs another attempt after `delay_s`."""

    delay_s: float


@dataclass(slots=True)
class OrderRun:
    engine: Engine
    row: OrderRow
    token_in: Token
    token_out: Token
    observer: RunObserver = field(init=False)

    def __post_init__(self) -> None:
        row = self.row
        self.observer = RunObserver(
            self.engine.metrics,
            row.status,
            row.triggered_at or row.created_at,
            int(row.attempts),
            row.dex_chosen or "",
        )

    @property
    def order_id(self) -> uuid.UUID:
        return self.row.id

    async def move(
        self,
        status: str,
        attempt: int,
        data: dict[str, Any],
        allowed_from: tuple[str, ...],
        **fields: Any,
    ) -> None:
        """Apply a guarded transition and publish its event; `Superseded` if the guard refused."""
        move = Move(self.order_id, status, attempt, data, allowed_from, fields, fence=self.row.runs)
        if await self.engine.writes.move(move) is None:
            raise Superseded(f"{status} refused: the order moved on elsewhere")
        self.observer.moved(
            status, attempt, data.get("dex") or fields.get("dex_chosen", ""), data.get("code", "")
        )


async def run_order(engine: Engine, order_id: uuid.UUID) -> str | RetryLater:
    """Advance the order as far as it can go now; returns its status or when to try again."""
    row = await engine.writes.start_run(order_id)
    if row is None:  # finished, still waiting for its trigger, or never existed
        return "done"
    token_in = await launches.token(engine.redis, row.token_in)
    token_out = await launches.token(engine.redis, row.token_out)
    if token_in is None or token_out is None:  # a launched token the market no longer knows
        run = OrderRun(engine, row, unlisted_token(row.token_in), unlisted_token(row.token_out))
        failure = AttemptFailed("UNKNOWN_TOKEN", "the market no longer lists this token", False)
        try:
            return await _after_failure(run, int(row.attempts), failure)
        except Superseded:
            return "superseded"
    run = OrderRun(engine, row, token_in, token_out)
    try:
        return await _advance(run)
    except Rearmed:
        log.info("order %s: price moved away before execution; waiting again", order_id)
        return "waiting"
    except Superseded as exc:
        log.warning("order %s: %s", order_id, exc)
        return "superseded"


async def _advance(run: OrderRun) -> str | RetryLater:
    """Recover an earlier transaction if there is one, else make the next attempt."""
    engine, row = run.engine, run.row
    attempt = int(row.attempts)
    try:
        if row.tx_pending:
            landed = await _recover(run)
            if landed is not None:
                assert row.tx_hash is not None  # stored with tx_pending (`building`)
                return await _settle(run, attempt, row.tx_hash, landed)
            if attempt >= engine.settings.max_attempts:
                raise AttemptFailed(
                    "BLOCKHASH_EXPIRED", "transaction expired before it landed", True
                )
        if row.runs - row.runs_at_trigger > engine.settings.max_runs:
            raise AttemptFailed(
                "EXECUTION_ABANDONED",
                f"the order's job was interrupted {row.runs - row.runs_at_trigger - 1} times",
                False,
            )
        # A run cut short after `routing` and before `building` (a crash, an outage) signed and
        # sent nothing: the next run makes that same attempt again instead of spending one.
        resumed = row.status == "routing"
        if not resumed:
            attempt += 1
        if attempt > engine.settings.max_attempts:
            raise AttemptFailed(
                row.error_code or "ATTEMPTS_EXHAUSTED",
                row.last_error or "no attempts left",
                retryable=False,
            )
        signature, landed = await _attempt(run, attempt, resumed)
        return await _settle(run, attempt, signature, landed)
    except AttemptFailed as failure:
        return await _after_failure(run, attempt, failure)


async def _recover(run: OrderRun) -> SignatureStatus | None:
    """What became of the transaction an earlier run signed (and maybe sent)?

    Returns its landed status, or None once it can no longer land (a new one may be signed).
    """
    row = run.row
    # `building` stores the signed transaction, its signature and validity with tx_pending.
    assert row.tx_hash and row.tx_base64 and row.last_valid_block_height is not None
    log.info("order %s: asking the cluster about %s", run.order_id, row.tx_hash)
    raw = base64.b64decode(row.tx_base64)
    status = await run.engine.cluster.await_landing(row.tx_hash, raw, row.last_valid_block_height)
    if status is None:
        log.info("order %s: %s expired without landing", run.order_id, row.tx_hash)
    return status


async def _attempt(run: OrderRun, attempt: int, resumed: bool) -> tuple[str, SignatureStatus]:
    """Route, build, sign, record, send, and wait for the transaction to land.

    `resumed`: an earlier run began this attempt and stopped before building; its `routing`
    event is followed by this run's, for the same attempt, marked `resumed`."""
    engine, row = run.engine, run.row
    ATTEMPT.set(attempt)  # the log lines of this attempt say so from its first one
    decision = await decide(engine.market, row, run.token_in, run.token_out)
    if decision is None:
        raise AttemptFailed(
            "INSUFFICIENT_LIQUIDITY",
            f"no route can fill this order (insufficient liquidity, or price impact over "
            f"{MAX_PRICE_IMPACT_PCT}%)",
            False,
        )
    plan, slippage = decision.plan, int(row.slippage_bps)
    _log_route(run, attempt, decision)
    guard = _guard_min_out(run)
    if row.type == "limit" and row.status == "pending" and plan.amount_out < guard:
        await _rearm(run)
    # The transaction never accepts less than the order's own guard (limit price, maxPrice).
    min_out = plan.min_amount_out(slippage, guard)
    routing = decision.to_event(run.token_in, run.token_out, slippage, guard)
    if attempt == 1 and row.trigger_reason:
        routing["trigger"] = row.trigger_reason
    if resumed:
        routing["resumed"] = True
    if attempt > 1:
        routing["retryOf"] = {"code": row.error_code, "error": row.last_error}
    main = plan.main_leg
    await run.move(
        "routing",
        attempt,
        routing,
        OPEN_STATUSES,
        attempts=attempt,
        dex_chosen=main.dex,
        pool=main.pool.address,
        quote_price=human_price(run.token_in, run.token_out, plan.amount_in, plan.amount_out),
        min_amount_out=min_out,
    )
    blockhash, lvbh = await engine.cluster.latest_blockhash()
    swaps = swap_instructions(plan, str(engine.keypair.pubkey()), slippage, guard)
    signed = build_swap_transaction(
        engine.keypair,
        swaps,
        blockhash,
        COMPUTE_UNIT_PRICE[row.type],
        f"oee:{run.order_id}:{attempt}",
    )
    building = {
        "dex": main.dex,
        "pool": main.pool.address,
        "legs": len(swaps),
        "txHash": signed.signature,
        "minAmountOut": dec_str(from_base_units(run.token_out, min_out)),
        "computeUnitPrice": signed.compute_unit_price,
        "computeUnitLimit": signed.compute_unit_limit,
        "wrapSol": signed.wrap_sol,
        "unwrapSol": signed.unwrap_sol,
        "lastValidBlockHeight": lvbh,
    }
    if plan.exact_out:
        most = plan.max_amount_in(slippage)
        building["maxAmountIn"] = dec_str(from_base_units(run.token_in, most))
    # The signature is durable before the send: whatever happens next, a later run knows it.
    await run.move(
        "building",
        attempt,
        building,
        ("routing",),
        tx_hash=signed.signature,
        tx_base64=signed.base64,
        last_valid_block_height=lvbh,
        tx_pending=True,
    )
    return signed.signature, await _send(run, attempt, signed, lvbh)


def _guard_min_out(run: OrderRun) -> int:
    """The least output a limit (limitPrice) or sniper (maxPrice) order may accept; 0 if none."""
    row = run.row
    if row.amount_in is None:  # exact-out: a market order, with no guard of its own
        return 0
    amount_in = from_base_units(run.token_in, int(row.amount_in))
    if row.limit_price is not None:
        wanted = amount_in * row.limit_price
    elif row.max_price is not None:
        wanted = amount_in / row.max_price
    else:
        return 0
    return int(wanted.scaleb(run.token_out.decimals).to_integral_value(rounding=ROUND_CEILING))


async def _rearm(run: OrderRun) -> None:
    async with run.engine.db.acquire() as conn:
        rearmed = await queries.rearm_trigger(conn, run.order_id, run.row.runs)
    if rearmed:
        row = run.row
        await triggers.index_waiting(
            run.engine.redis,
            run.order_id,
            row.type,
            row.token_in,
            row.token_out,
            row.limit_price,
        )
        raise Rearmed
    raise Superseded("cancelled or expired while triggering")


async def _send(run: OrderRun, attempt: int, signed: SignedSwap, lvbh: int) -> SignatureStatus:
    cluster = run.engine.cluster
    try:
        await cluster.send_transaction(signed.raw, lvbh)
    except BlockhashNotFound as exc:
        raise AttemptFailed(
            exc.code, "blockhash expired before the transaction landed", True
        ) from exc
    except RpcTimeout:
        log.info("order %s: send timed out; checking the signature", run.order_id)
    except ClusterError as exc:
        raise AttemptFailed(exc.code, str(exc), False) from exc
    slot = cluster.height  # the slot the send saw (or the blockhash's, if it was dropped)
    await run.move(
        "submitted", attempt, {"txHash": signed.signature, "slot": slot}, ("building",), slot=slot
    )
    landed = await cluster.await_landing(signed.signature, signed.raw, lvbh)
    if landed is None:
        raise AttemptFailed("BLOCKHASH_EXPIRED", "transaction expired before it landed", True)
    return landed


async def _settle(run: OrderRun, attempt: int, tx_hash: str, landed: SignatureStatus) -> str:
    """Record a landed transaction: confirmed on success, an attempt failure on a program error."""
    venue = VENUE_NAMES.get(landed.venue, landed.venue)
    if landed.err in _SLIPPAGE_NAMES:
        raise AttemptFailed(
            "SLIPPAGE_EXCEEDED",
            f"{landed.err} ({venue}): the price moved past the slippage limit",
            True,
        )
    if landed.err == INSUFFICIENT_FUNDS:  # an earlier leg delivered less than a later one spends
        raise AttemptFailed("SLIPPAGE_EXCEEDED", f"{landed.err}: a leg came up short", True)
    if landed.err is not None:
        raise AttemptFailed(
            "INSUFFICIENT_LIQUIDITY", f"{landed.err} ({venue}): the pool cannot fill it", False
        )
    price = human_price(run.token_in, run.token_out, landed.amount_in, landed.amount_out)
    latency_ms = int(time.time() * 1000 - run.row.created_at.timestamp() * 1000)
    confirmed = {
        "dex": landed.venue,
        "txHash": tx_hash,
        "executedPrice": str(price),
        "amountIn": dec_str(from_base_units(run.token_in, landed.amount_in)),
        "amountOut": dec_str(from_base_units(run.token_out, landed.amount_out)),
        "feeAmount": dec_str(from_base_units(run.token_in, landed.fee_amount)),
        "fills": fills(landed.legs, run.token_in, run.token_out),
        "slot": landed.slot,
        "latencyMs": latency_ms,
    }
    spent = {} if run.row.exact_amount_out is None else {"amount_in": landed.amount_in}
    await run.move(
        "confirmed",
        attempt,
        confirmed,
        ("building", "submitted"),
        **spent,
        executed_price=price,
        amount_out=landed.amount_out,
        fee_amount=landed.fee_amount,
        slot=landed.slot,
        tx_pending=False,
    )
    log.info(
        "order %s: confirmed on %s at %s in %d ms", run.order_id, landed.venue, price, latency_ms
    )
    return "confirmed"


async def _after_failure(run: OrderRun, attempt: int, failure: AttemptFailed) -> str | RetryLater:
    settings = run.engine.settings
    if failure.retryable and attempt < settings.max_attempts:
        delay_s = settings.backoff_base_ms * 2 ** (attempt - 1) / 1000
        async with run.engine.db.acquire() as conn:
            owned = await queries.record_retry(
                conn, run.order_id, failure.code, failure.message, run.row.runs
            )
        if not owned:
            raise Superseded("a newer run owns the order")
        run.engine.metrics.retry(failure.code)
        log.info(
            "order %s: attempt %d failed (%s); retrying in %.2f s",
            run.order_id,
            attempt,
            failure.code,
            delay_s,
        )
        return RetryLater(delay_s)
    data = {
        "error": failure.message,
        "code": failure.code,
        "attempts": attempt,
        "retryable": failure.retryable,
    }
    await run.move(
        "failed",
        attempt,
        data,
        OPEN_STATUSES,
        last_error=failure.message,
        error_code=failure.code,
        attempts=attempt,
        tx_pending=False,
    )
    log.info("order %s: failed after %d attempt(s): %s", run.order_id, attempt, failure.message)
    return "failed"


def _log_route(run: OrderRun, attempt: int, decision: Decision) -> None:
    quotes = ", ".join(
        f"{q.dex} {q.pool.kind} out={dec_str(from_base_units(run.token_out, q.amount_out))}"
        f" impact={q.price_impact_pct:.4f}%"
        for q in decision.quotes
    )
    log.info(
        "order %s attempt %d routing: %s | route %s: %s",
        run.order_id,
        attempt,
        quotes or "no direct pool",
        describe(decision.plan),
        decision.reason,
    )
