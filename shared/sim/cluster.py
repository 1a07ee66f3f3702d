"""A simulated Solana cluster in Redis: slot clock, blockhashes, sending and signature statuses.

A transaction "lands" at the moment it is sent: one Lua script checks its blockhash is still
valid, that its signature is new, and that the pool it swaps against has not changed since the
output was computed, then records the new pool and the signature's status together. Sending the
same signed bytes again is therefore harmless (the signature is already recorded), which is what
makes rebroadcasting and crash recovery safe. Confirmation is the status becoming visible ~1-3 s
after landing, like a real cluster's commitment levels.
"""

import asyncio
import hashlib
import logging
import math
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from solders.hash import Hash
from solders.transaction import VersionedTransaction

from shared import keys
from shared.market.pools import Pool
from shared.settings import Settings
from shared.sim.execution import execute_route
from shared.sim.market import Market, pair_key
from shared.sim.programs import VENUE_PROGRAMS, SwapInstruction, decode_swap
from shared.sim.transactions import PACKET_DATA_SIZE

log = logging.getLogger(__name__)

SLOT_MS = 400
MIN_SLOT_MS = 20  # keeps a blockhash valid for a few seconds even with delays switched off
BLOCKHASH_VALIDITY = 150
SEND_LATENCY_S = 0.05
CONFIRM_DELAY_MS = (1000, 3000)
SIGNATURE_TTL_S = 7 * 24 * 3600
_MAX_CAS_TRIES = 20
_MAX_LANDINGS = 10_000

# KEYS: signature, genesis. ARGV: slot ms. -> {record or false, now ms, height}
_OBSERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local genesis = tonumber(redis.call('GET', KEYS[2]) or now)
return {redis.call('GET', KEYS[1]), now, math.floor((now - genesis) / tonumber(ARGV[1]))}
"""

_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local genesis = tonumber(redis.call('GET', KEYS[1]) or '0')
if genesis == 0 then redis.call('SET', KEYS[1], now); genesis = now end
return {now, math.floor((now - genesis) / tonumber(ARGV[1]))}
"""

# KEYS: signature, genesis, then per pool: its pools hash, its version key.
# ARGV: last valid height, slot ms, record JSON (an object), confirm delay ms, ttl s, then per
# pool: expected version, pool field, new pool JSON ('' = no change: unused, or the
# transaction failed on chain). Every pool is checked before any is written: all or nothing.
_SEND = """
local existing = redis.call('GET', KEYS[1])
if existing then return {'duplicate', existing} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local height = math.floor((now - tonumber(redis.call('GET', KEYS[2]) or now)) / tonumber(ARGV[2]))
if height > tonumber(ARGV[1]) then return {'expired', tostring(height)} end
local pools = (#KEYS - 2) / 2
for i = 0, pools - 1 do
  if tonumber(redis.call('GET', KEYS[4 + 2 * i]) or '0') ~= tonumber(ARGV[6 + 3 * i]) then
    return {'conflict', tostring(i)}
  end
end
for i = 0, pools - 1 do
  if ARGV[8 + 3 * i] ~= '' then
    redis.call('HSET', KEYS[3 + 2 * i], ARGV[7 + 3 * i], ARGV[8 + 3 * i])
    redis.call('INCR', KEYS[4 + 2 * i])
  end
end
local record = string.format('{"slot":%d,"landedAtMs":%d,"confirmAtMs":%d,%s',
  height + 1, now, now + tonumber(ARGV[4]), string.sub(ARGV[3], 2))
redis.call('SET', KEYS[1], record, 'EX', tonumber(ARGV[5]))
return {'ok', record}
"""


class ClusterError(Exception):
    """An RPC-level failure talking to the cluster."""

    code = "RPC_ERROR"


class BlockhashNotFound(ClusterError):
    code = "BLOCKHASH_EXPIRED"


class RpcTimeout(ClusterError):
    code = "RPC_TIMEOUT"


class InvalidTransaction(ClusterError):
    code = "INVALID_TRANSACTION"


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """What the cluster knows of a landed transaction."""

    slot: int
    confirmed: bool
    err: str | None
    venue: str
    amount_in: int
    amount_out: int
    fee_amount: int
    landed_at_ms: int
    confirm_at_ms: int
    legs: tuple[dict[str, Any], ...] = ()  # each leg's fill: venue, pool, mints, amounts, fee

    @classmethod
    def from_record(cls, record: dict[str, Any], now_ms: int) -> "SignatureStatus":
        return cls(
            slot=int(record["slot"]),
            confirmed=now_ms >= int(record["confirmAtMs"]),
            err=record.get("err"),
            venue=record["venue"],
            amount_in=int(record["amountIn"]),
            amount_out=int(record["amountOut"]),
            fee_amount=int(record["fee"]),
            landed_at_ms=int(record["landedAtMs"]),
            confirm_at_ms=int(record["confirmAtMs"]),
            legs=tuple(record.get("legs", ())),
        )


class Cluster:
    """RPC-like access to the simulated cluster; one per process."""

    def __init__(
        self, redis: Redis, market: Market, settings: Settings, rng: random.Random | None = None
    ) -> None:
        self.redis = redis
        self.market = market
        self.settings = settings
        self.rng = rng or random.Random()
        self.slot_ms = max(SLOT_MS * settings.sim_latency_scale, MIN_SLOT_MS)
        self._clock = redis.register_script(_CLOCK)
        self._status = redis.register_script(_OBSERVE)
        self.height = 0  # the newest block height this process has seen
        self._send = redis.register_script(_SEND)
        self._pool_locks: dict[str, asyncio.Lock] = {}
        self._last_written: dict[str, Pool] = {}  # pool address -> the state our last swap wrote
        self._landings: dict[str, dict[str, Any]] = {}  # signature -> record, as it just landed
        self._blockhash = self.blockhash_at(0), 0
        self._blockhash_at_s = -math.inf

    async def _latency(self, seconds: float) -> None:
        if self.settings.sim_latency_scale > 0:
            await asyncio.sleep(
                seconds * self.settings.sim_latency_scale * self.rng.uniform(0.6, 1.4)
            )

    async def clock(self) -> tuple[int, int]:
        """(now in ms, current block height) by the cluster's clock."""
        now_ms, height = await self._clock(keys=[keys.CLUSTER_GENESIS_MS], args=[self.slot_ms])
        self.height = max(self.height, int(height))
        return int(now_ms), int(height)

    @staticmethod
    def blockhash_at(height: int) -> Hash:
        return Hash(hashlib.sha256(f"oee-block-{height}".encode()).digest())

    async def latest_blockhash(self) -> tuple[Hash, int]:
        """A recent blockhash and the last block height at which it is still valid.

        Like a trading client's blockhash poller, the answer is reused for half a slot: a
        transaction loses at most half a slot of its ~150-block validity, and a busy engine
        asks the cluster about once per half slot instead of once per order.
        """
        if time.monotonic() - self._blockhash_at_s > self.slot_ms / 2000:
            _, height = await self.clock()
            self._blockhash = self.blockhash_at(height), height + BLOCKHASH_VALIDITY
            self._blockhash_at_s = time.monotonic()
        return self._blockhash

    async def signature_status(self, signature: str) -> tuple[SignatureStatus | None, int]:
        """The signature's status (None if the cluster never saw it land) and the block height."""
        status, _, height = await self._observe(signature)
        return status, height

    async def _observe(self, signature: str) -> tuple[SignatureStatus | None, int, int]:
        raw, now_ms, height = await self._status(
            keys=[keys.signature_key(signature), keys.CLUSTER_GENESIS_MS], args=[self.slot_ms]
        )
        self.height = max(self.height, int(height))
        status = None if not raw else SignatureStatus.from_record(orjson.loads(raw), int(now_ms))
        return status, int(now_ms), int(height)

    async def send_transaction(self, raw_tx: bytes, last_valid_block_height: int) -> str:
        """Send a signed transaction; returns its signature once the cluster has it.

        Like a real RPC node this may drop the transaction silently, reject a stale blockhash,
        or time out after (or before) the transaction landed; the caller finds out which by
        asking for the signature's status.
        """
        if len(raw_tx) > PACKET_DATA_SIZE:  # as a real node: it never reaches a leader
            raise InvalidTransaction(
                f"transaction too large: {len(raw_tx)} bytes (max {PACKET_DATA_SIZE})"
            )
        tx = VersionedTransaction.from_bytes(raw_tx)
        if not all(tx.verify_with_results()):
            raise InvalidTransaction("signature verification failed")
        signature = str(tx.signatures[0])
        await self._latency(SEND_LATENCY_S)
        s = self.settings
        roll = self.rng.random()
        if roll < s.sim_expiry_rate:
            raise BlockhashNotFound("Blockhash not found")
        if roll < s.sim_expiry_rate + s.sim_drop_rate:
            log.debug("cluster dropped %s", signature)
            return signature
        timed_out = roll < s.sim_expiry_rate + s.sim_drop_rate + s.sim_rpc_timeout_rate
        if timed_out and self.rng.random() < 0.5:
            raise RpcTimeout("sendTransaction timed out")  # never reached the leader
        await self._execute(tx, signature, last_valid_block_height)
        if timed_out:
            raise RpcTimeout("sendTransaction timed out")  # landed, but the answer was lost
        return signature

    async def _execute(self, tx: VersionedTransaction, signature: str, lvbh: int) -> None:
        swaps = _find_swaps(tx)
        if not swaps:
            raise InvalidTransaction("no venue swap instruction")
        # Swaps on one pool from this process go one at a time (as a leader orders a block),
        # each starting from the state the last one wrote: no compare-and-set conflicts among
        # themselves, and no re-read of the pool unless another process moved it. A route
        # takes its pools' locks in address order, so two routes cannot wait on each other.
        addresses = sorted({s.pool for s in swaps})
        async with AsyncExitStack() as stack:
            for address in addresses:
                await stack.enter_async_context(
                    self._pool_locks.setdefault(address, asyncio.Lock())
                )
            await self._execute_locked(signature, lvbh, swaps, addresses)

    async def _execute_locked(
        self, signature: str, lvbh: int, swaps: list[SwapInstruction], addresses: list[str]
    ) -> None:
        pools = {a: p for a in addresses if (p := self._last_written.pop(a, None)) is not None}
        for _ in range(_MAX_CAS_TRIES):
            await self._read_missing(pools, addresses, swaps)
            outcome = execute_route(pools, swaps, int(time.time()))
            written = {a: outcome.pools[a].dumps().encode() for a in outcome.changed}
            args: list[bytes | str | int | float] = [lvbh, self.slot_ms]
            args += [orjson.dumps(outcome.record), self._confirm_delay_ms(), SIGNATURE_TTL_S]
            for address in addresses:
                args += [pools[address].version, address, written.get(address, b"")]
            result, detail = await self._send(
                keys=[keys.signature_key(signature), keys.CLUSTER_GENESIS_MS]
                + [k for a in addresses for k in _pool_keys(pools[a])],
                args=args,
            )
            result = result.decode() if isinstance(result, bytes) else result
            if result in ("ok", "duplicate"):
                landed = orjson.loads(detail)
                self.height = max(self.height, int(landed["slot"]) - 1)
            if result == "ok":
                self._last_written.update(outcome.pools)
                for address, raw in written.items():
                    self.market.remember(raw, outcome.pools[address])
                self._remember_landing(signature, landed)
            if result == "expired":
                raise BlockhashNotFound("Blockhash not found")
            if result in ("ok", "duplicate"):
                return
            pools.clear()  # another writer moved a pool: read them again
        raise RpcTimeout("pool too busy")  # nothing landed; safe to retry

    async def _read_missing(
        self, pools: dict[str, Pool], addresses: list[str], swaps: list[SwapInstruction]
    ) -> None:
        missing = [a for a in addresses if a not in pools]
        if not missing:
            found: list[Pool | None] = []
        elif len(missing) == 1:
            found = [await self.market.pool(missing[0])]
        else:
            found = list(await asyncio.gather(*(self.market.pool(a) for a in missing)))
        for address, pool in zip(missing, found, strict=True):
            if pool is None:
                raise InvalidTransaction(f"unknown pool {address}")
            pools[address] = pool
        for swap in swaps:
            if pools[swap.pool].program_id != swap.program_id:
                raise InvalidTransaction(f"pool {swap.pool} is not a {swap.program_id} pool")

    def _remember_landing(self, signature: str, record: dict[str, Any]) -> None:
        """Keep what a send just saw land, so `await_landing` need not ask at once."""
        if len(self._landings) >= _MAX_LANDINGS:  # a send whose landing nobody awaited
            del self._landings[next(iter(self._landings))]
        self._landings[signature] = record

    def _confirm_delay_ms(self) -> int:
        low, high = CONFIRM_DELAY_MS
        return int(self.rng.uniform(low, high) * self.settings.sim_latency_scale)

    async def await_landing(
        self, signature: str, raw_tx: bytes, last_valid_block_height: int
    ) -> SignatureStatus | None:
        """Wait until the transaction is confirmed (or failed on chain); None once it expired.

        While its status is unknown the same signed bytes are rebroadcast, as wallets do: a
        dropped send costs a slot, not an order. Past `last_valid_block_height` the transaction
        can never land, so returning None means it is safe to sign a new one.
        """
        rebroadcast_every_ms = max(2000 * self.settings.sim_latency_scale, self.slot_ms)
        next_send_ms = 0
        landed = self._landings.pop(signature, None)
        if landed is not None:  # this process's send landed it: its status is known until then
            sent = SignatureStatus.from_record(landed, int(landed["landedAtMs"]))
            if sent.err or sent.confirmed:
                return sent
            await asyncio.sleep((sent.confirm_at_ms - sent.landed_at_ms) / 1000)
        while True:
            status, now_ms, height = await self._observe(signature)
            if status is not None:
                if status.err or status.confirmed:
                    return status
                await asyncio.sleep(max(status.confirm_at_ms - now_ms, 0) / 1000)
                continue
            if height > last_valid_block_height:
                return None
            if now_ms >= next_send_ms:
                next_send_ms = now_ms + int(rebroadcast_every_ms)
                try:
                    await self.send_transaction(raw_tx, last_valid_block_height)
                except ClusterError:
                    pass  # the status and height checks on the next pass decide
                continue
            await asyncio.sleep(self.slot_ms / 1000)


def _pool_keys(pool: Pool) -> list[str]:
    return [keys.pools_key(pair_key(*pool.mints)), keys.pool_version_key(pool.address)]


def _find_swaps(tx: VersionedTransaction) -> list[SwapInstruction]:
    """Every venue swap instruction of the transaction, in order."""
    msg = tx.message
    account_keys = list(msg.account_keys)
    swaps = []
    for ix in msg.instructions:
        program_id = str(account_keys[ix.program_id_index])
        if program_id in VENUE_PROGRAMS:
            swap = decode_swap(
                program_id, bytes(ix.data), [account_keys[i] for i in bytes(ix.accounts)]
            )
            if swap is None:
                return []  # a malformed venue instruction fails the whole transaction
            swaps.append(swap)
    return swaps
