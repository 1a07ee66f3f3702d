"""The simulated cluster against real Redis: signed v0 transactions, atomic landing, slippage,
blockhash expiry, idempotent resends and rebroadcasting."""

import hashlib
import random
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from shared import keys
from shared.market.meteora import METEORA_DLMM, DlmmPool
from shared.market.pools import Pool
from shared.market.raydium import RAYDIUM_AMM_V4, RAYDIUM_CPMM, CpPool
from shared.market.router import MAX_ROUTE_LEGS
from shared.market.tokens import Token, resolve_token
from shared.sim.cluster import BlockhashNotFound, Cluster, InvalidTransaction
from shared.sim.market import Market
from shared.sim.programs import MEMO_PROGRAM, SwapInstruction, encode_swap
from shared.sim.transactions import PACKET_DATA_SIZE, SignedSwap, build_swap_transaction
from tests.conftest import Infra
from tests.conftest import test_settings as build_settings

COMPUTE_BUDGET = "ComputeBudget111111111111111111111111111111"
SYSTEM = "11111111111111111111111111111111"
TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
ATA = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
LAMPORTS = 10**9


def _token(symbol: str) -> Token:
    token = resolve_token(symbol)
    assert token is not None
    return token


SOL, USDC, ETH = _token("SOL"), _token("USDC"), _token("ETH")


def _anchor_tag(name: str) -> bytes:
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]


# Real instruction tags: AMM v4 swap_base_in is 9; CPMM and DLMM are Anchor discriminators.
SWAP_TAGS = {
    RAYDIUM_AMM_V4: bytes([9]),
    RAYDIUM_CPMM: _anchor_tag("swap_base_input"),
    METEORA_DLMM: _anchor_tag("swap"),
}


@dataclass
class Sim:
    market: Market
    cluster: Cluster
    redis: Redis


async def _sim(
    redis: Redis, infra: Infra, tmp_path: Path, rng: random.Random | None = None, **overrides: Any
) -> Sim:
    settings = build_settings("postgresql://unused", infra.redis_url, tmp_path, **overrides)
    market = Market(redis, settings)
    assert await market.ensure_seeded()
    return Sim(market, Cluster(redis, market, settings, rng=rng), redis)


@pytest.fixture
async def sim(redis: Redis, infra: Infra, tmp_path: Path) -> Sim:
    return await _sim(redis, infra, tmp_path)


async def _pool(market: Market, a: Token, b: Token, program_id: str) -> Pool:
    matches = [p for p in await market.pools(a.mint, b.mint) if p.program_id == program_id]
    assert len(matches) == 1, matches
    return matches[0]


async def _version(redis: Redis, address: str) -> int:
    return int(await redis.get(keys.pool_version_key(address)) or b"-1")


async def _sign(
    cluster: Cluster,
    keypair: Keypair,
    pool: Pool,
    token_in: Token,
    amount_in: int,
    min_out: int,
    compute_unit_price: int = 50_000,
) -> tuple[SignedSwap, int, Hash]:
    """A signed swap against `pool` and the last block height it is valid for."""
    mint_out = next(m for m in pool.mints if m != token_in.mint)
    swap = SwapInstruction(
        program_id=pool.program_id,
        pool=pool.address,
        owner=str(keypair.pubkey()),
        mint_in=token_in.mint,
        mint_out=mint_out,
        amount_in=amount_in,
        min_amount_out=min_out,
    )
    blockhash, lvbh = await cluster.latest_blockhash()
    signed = build_swap_transaction(keypair, [swap], blockhash, compute_unit_price, "test")
    return signed, lvbh, blockhash


def test_the_largest_route_the_router_returns_fits_in_one_packet() -> None:
    """`MAX_ROUTE_LEGS` swaps over three hops, SOL wrapped in and its account closed, the
    longest memo the worker writes: within Solana's 1,232 bytes. Two legs more do not fit,
    and the builder refuses them instead of signing what no cluster would take."""
    keypair = Keypair()
    owner = str(keypair.pubkey())
    path = [_token(s).mint for s in ("SOL", "USDC", "USDT", "BONK")]
    per_hop = (3, 3, MAX_ROUTE_LEGS - 6)

    def route(extra_legs: int) -> list[SwapInstruction]:
        swaps = []
        for hop, legs in enumerate(per_hop):
            for _ in range(legs + (extra_legs if hop == len(per_hop) - 1 else 0)):
                swaps.append(
                    SwapInstruction(
                        RAYDIUM_AMM_V4,
                        str(Pubkey.new_unique()),
                        owner,
                        path[hop],
                        path[hop + 1],
                        LAMPORTS,
                        1,
                    )
                )
        return swaps

    memo = f"oee:{uuid.uuid4()}:99"
    signed = build_swap_transaction(keypair, route(0), Hash.default(), 1_000_000, memo)
    assert len(signed.raw) <= PACKET_DATA_SIZE
    with pytest.raises(ValueError, match="over 1232"):
        build_swap_transaction(keypair, route(2), Hash.default(), 1_000_000, memo)


def _instructions(tx: VersionedTransaction) -> list[tuple[str, bytes, list[str]]]:
    """(program id, data, account keys) of every compiled instruction, in order."""
    account_keys = [str(k) for k in tx.message.account_keys]
    return [
        (
            account_keys[ix.program_id_index],
            bytes(ix.data),
            [account_keys[i] for i in bytes(ix.accounts)],
        )
        for ix in tx.message.instructions
    ]


def _reserves(pool: Pool) -> tuple[int, int]:
    s = pool.state
    if isinstance(s, CpPool):
        return s.reserve_a, s.reserve_b
    assert isinstance(s, DlmmPool)
    return sum(x for x, _ in s.bins.values()), sum(y for _, y in s.bins.values())


# --- the transaction itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_in", "token_out", "program_id"),
    [
        (SOL, USDC, RAYDIUM_AMM_V4),
        (USDC, SOL, RAYDIUM_CPMM),
        (ETH, USDC, METEORA_DLMM),
        (USDC, SOL, METEORA_DLMM),
    ],
    ids=["sol-in-amm-v4", "sol-out-cpmm", "no-sol-dlmm", "sol-out-dlmm"],
)
async def test_built_transaction_is_a_signed_v0_swap_for_the_venue_program(
    sim: Sim, token_in: Token, token_out: Token, program_id: str
) -> None:
    keypair = Keypair()
    pool = await _pool(sim.market, token_in, token_out, program_id)
    amount_in, min_out, cu_price = 123_456_789, 4_321, 77_777
    signed, _, blockhash = await _sign(
        sim.cluster, keypair, pool, token_in, amount_in, min_out, cu_price
    )

    tx = VersionedTransaction.from_bytes(signed.raw)
    assert isinstance(tx.message, MessageV0)
    assert len(tx.signatures) == 1
    assert tx.verify_with_results() == [True]
    assert str(tx.signatures[0]) == signed.signature
    assert signed.raw == bytes(VersionedTransaction(tx.message, [keypair]))  # solders' own way
    assert tx.message.account_keys[0] == keypair.pubkey()  # fee payer = signer
    assert tx.message.recent_blockhash == blockhash

    ixs = _instructions(tx)
    assert ixs[0][:2] == (COMPUTE_BUDGET, b"\x02" + struct.pack("<I", 200_000))
    assert ixs[1][:2] == (COMPUTE_BUDGET, b"\x03" + struct.pack("<Q", cu_price))
    assert ixs[2][:2] == ("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", b"test")

    venue_programs = {RAYDIUM_AMM_V4, RAYDIUM_CPMM, METEORA_DLMM}
    swaps = [i for i, ix in enumerate(ixs) if ix[0] in venue_programs]
    assert len(swaps) == 1
    swap_at = swaps[0]
    program, data, accounts = ixs[swap_at]
    assert program == program_id
    assert data == SWAP_TAGS[program_id] + struct.pack("<QQ", amount_in, min_out)
    assert accounts[0] == pool.address
    assert (accounts[3], accounts[4]) == (token_in.mint, token_out.mint)

    before, after = ixs[:swap_at], ixs[swap_at + 1 :]
    wraps = token_in == SOL
    transfers = [ix for ix in before if ix[0] == SYSTEM]
    sync_native = [ix for ix in before if ix[0] == TOKEN and ix[1] == bytes([17])]
    creates = [ix for ix in before if ix[0] == ATA]
    assert signed.wrap_sol is wraps
    if wraps:
        assert [ix[1] for ix in transfers] == [struct.pack("<IQ", 2, amount_in)]
        assert len(sync_native) == 1
        # The wrapped-SOL account is created, funded, then synced, in that order.
        assert before.index(transfers[0]) < before.index(sync_native[0])
        assert any(SOL.mint in ix[2] for ix in creates)
    else:
        assert transfers == [] and sync_native == []

    unwraps = token_out == SOL
    assert signed.unwrap_sol is unwraps
    if wraps or unwraps:  # the wrapped-SOL account is closed: SOL out, or SOL left unspent
        assert [ix[:2] for ix in after] == [(TOKEN, bytes([9]))]
    else:
        assert after == []


# --- landing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_in", "program_id", "amount_in"),
    [
        (SOL, RAYDIUM_AMM_V4, 3 * LAMPORTS),
        (USDC, RAYDIUM_CPMM, 250 * 10**6),
        (SOL, METEORA_DLMM, 2 * LAMPORTS),
    ],
    ids=["amm-v4", "cpmm", "dlmm"],
)
async def test_send_lands_the_quoted_swap_and_moves_the_pool(
    sim: Sim, token_in: Token, program_id: str, amount_in: int
) -> None:
    pool = await _pool(sim.market, SOL, USDC, program_id)
    quote = pool.quote(token_in.mint, amount_in, int(time.time()))
    signed, lvbh, _ = await _sign(sim.cluster, Keypair(), pool, token_in, amount_in, 1)

    assert (await sim.cluster.signature_status(signed.signature))[0] is None
    assert await sim.cluster.send_transaction(signed.raw, lvbh) == signed.signature

    status, _ = await sim.cluster.signature_status(signed.signature)
    assert status is not None
    assert status.err is None
    assert status.confirmed  # no simulated delays
    assert (status.amount_in, status.amount_out, status.fee_amount) == (
        amount_in,
        quote.amount_out,
        quote.fee_amount,
    )
    after = await sim.market.pool(pool.address)
    assert after is not None
    assert after.version == pool.version + 1
    assert await _version(sim.redis, pool.address) == pool.version + 1
    # Reserves of (first, second) mint: the whole input joins one side, the output leaves the other.
    forward = token_in.mint == pool.mints[0]
    moved = tuple(a - b for a, b in zip(_reserves(after), _reserves(pool), strict=True))
    assert moved == ((amount_in, -quote.amount_out) if forward else (-quote.amount_out, amount_in))


async def test_an_unchanged_pool_is_decoded_once_and_a_moved_one_is_read_afresh(
    sim: Sim,
) -> None:
    first = {p.address: p for p in await sim.market.pools(SOL.mint, USDC.mint)}
    again = {p.address: p for p in await sim.market.pools(SOL.mint, USDC.mint)}
    assert all(again[a] is first[a] for a in first)  # the same stored JSON: the same object
    pool = next(iter(first.values()))
    moved = pool.repriced(pool.spot_price(pool.mints[0]) * 2, int(time.time()))
    assert await sim.market.write_pool(moved, pool.version)
    after = {p.address: p for p in await sim.market.pools(SOL.mint, USDC.mint)}
    assert after[pool.address] == moved and after[pool.address].version == pool.version + 1
    assert all(after[a] is first[a] for a in first if a != pool.address)
    assert await sim.market.pool(pool.address) is after[pool.address]


async def test_sending_the_same_bytes_twice_executes_once(sim: Sim) -> None:
    pool = await _pool(sim.market, SOL, USDC, RAYDIUM_AMM_V4)
    signed, lvbh, _ = await _sign(sim.cluster, Keypair(), pool, SOL, 5 * LAMPORTS, 1)

    assert await sim.cluster.send_transaction(signed.raw, lvbh) == signed.signature
    first, _ = await sim.cluster.signature_status(signed.signature)
    once = await sim.market.pool(pool.address)
    assert await sim.cluster.send_transaction(signed.raw, lvbh) == signed.signature
    second, _ = await sim.cluster.signature_status(signed.signature)
    twice = await sim.market.pool(pool.address)

    assert first is not None and first.err is None
    assert second == first  # the same landing, not a second one
    assert once is not None and twice is not None
    assert once.version == twice.version == pool.version + 1
    assert twice.dumps() == once.dumps()
    assert await _version(sim.redis, pool.address) == pool.version + 1


@pytest.mark.parametrize(
    ("program_id", "error_name"),
    [
        (RAYDIUM_AMM_V4, "ExceededSlippage"),
        (RAYDIUM_CPMM, "ExceededSlippage"),
        (METEORA_DLMM, "ExceededAmountSlippageTolerance"),
    ],
    ids=["amm-v4", "cpmm", "dlmm"],
)
async def test_price_moved_after_signing_fails_with_the_venues_slippage_error(
    sim: Sim, program_id: str, error_name: str
) -> None:
    pool = await _pool(sim.market, SOL, USDC, program_id)
    amount_in = LAMPORTS
    quote = pool.quote(SOL.mint, amount_in, int(time.time()))
    mine, lvbh, _ = await _sign(sim.cluster, Keypair(), pool, SOL, amount_in, quote.amount_out)

    # Someone else sells a lot of SOL into the same pool first.
    theirs, their_lvbh, _ = await _sign(sim.cluster, Keypair(), pool, SOL, 5_000 * LAMPORTS, 1)
    await sim.cluster.send_transaction(theirs.raw, their_lvbh)
    their_status, _ = await sim.cluster.signature_status(theirs.signature)
    assert their_status is not None and their_status.err is None
    moved = await sim.market.pool(pool.address)
    assert moved is not None and moved.version == pool.version + 1
    assert moved.quote(SOL.mint, amount_in, int(time.time())).amount_out < quote.amount_out

    assert await sim.cluster.send_transaction(mine.raw, lvbh) == mine.signature
    status, _ = await sim.cluster.signature_status(mine.signature)
    assert status is not None
    assert status.err == error_name
    assert status.amount_out == 0
    unchanged = await sim.market.pool(pool.address)
    assert unchanged is not None
    assert unchanged.dumps() == moved.dumps()
    assert await _version(sim.redis, pool.address) == moved.version


async def test_expired_blockhash_is_rejected_and_nothing_executes(sim: Sim) -> None:
    pool = await _pool(sim.market, SOL, USDC, RAYDIUM_AMM_V4)
    signed, _, _ = await _sign(sim.cluster, Keypair(), pool, SOL, LAMPORTS, 1)
    _, height = await sim.cluster.clock()

    with pytest.raises(BlockhashNotFound):
        await sim.cluster.send_transaction(signed.raw, height - 1)

    status, _ = await sim.cluster.signature_status(signed.signature)
    assert status is None
    after = await sim.market.pool(pool.address)
    assert after is not None and after.dumps() == pool.dumps()
    assert await _version(sim.redis, pool.address) == pool.version


async def test_await_landing_rebroadcasts_a_dropped_transaction(
    redis: Redis, infra: Infra, tmp_path: Path
) -> None:
    sim = await _sim(redis, infra, tmp_path, rng=random.Random(1), sim_drop_rate=0.5)
    pool = await _pool(sim.market, SOL, USDC, RAYDIUM_AMM_V4)
    quote = pool.quote(SOL.mint, LAMPORTS, int(time.time()))
    signed, lvbh, _ = await _sign(sim.cluster, Keypair(), pool, SOL, LAMPORTS, 1)

    # With this seed the first send is dropped: the cluster never saw it.
    assert await sim.cluster.send_transaction(signed.raw, lvbh) == signed.signature
    assert (await sim.cluster.signature_status(signed.signature))[0] is None
    assert await _version(redis, pool.address) == pool.version

    status = await sim.cluster.await_landing(signed.signature, signed.raw, lvbh)
    assert status is not None
    assert status.confirmed and status.err is None
    assert status.amount_out == quote.amount_out
    assert await _version(redis, pool.address) == pool.version + 1


async def test_await_landing_gives_up_once_the_blockhash_expired(
    redis: Redis, infra: Infra, tmp_path: Path
) -> None:
    sim = await _sim(redis, infra, tmp_path, rng=random.Random(1), sim_drop_rate=1.0)
    pool = await _pool(sim.market, SOL, USDC, RAYDIUM_AMM_V4)
    signed, _, _ = await _sign(sim.cluster, Keypair(), pool, SOL, LAMPORTS, 1)
    _, height = await sim.cluster.clock()

    assert await sim.cluster.await_landing(signed.signature, signed.raw, height + 2) is None
    assert (await sim.cluster.signature_status(signed.signature))[0] is None
    assert await _version(redis, pool.address) == pool.version


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


async def test_tampered_transaction_is_rejected(sim: Sim) -> None:
    pool = await _pool(sim.market, SOL, USDC, RAYDIUM_AMM_V4)
    min_out = 0x0102030405060708
    signed, lvbh, _ = await _sign(sim.cluster, Keypair(), pool, SOL, LAMPORTS, min_out)
    # Byte 0 is the signature count; the first signature follows it.
    bad_signature = _flip(signed.raw, 10)
    # A lower minimum in the message, under the original signature.
    at = signed.raw.index(struct.pack("<Q", min_out))
    bad_message = _flip(signed.raw, at)

    for raw in (bad_signature, bad_message):
        with pytest.raises(InvalidTransaction):
            await sim.cluster.send_transaction(raw, lvbh)

    assert (await sim.cluster.signature_status(signed.signature))[0] is None
    assert await _version(sim.redis, pool.address) == pool.version
    # The untouched bytes still go through, so the rejections were about the tampering.
    await sim.cluster.send_transaction(signed.raw, lvbh)
    status, _ = await sim.cluster.signature_status(signed.signature)
    assert status is not None and status.err == "ExceededSlippage"


async def test_a_transaction_over_the_packet_limit_is_refused_and_nothing_executes(
    sim: Sim,
) -> None:
    """A node refuses a transaction over 1,232 bytes before any leader sees it, however well
    signed; the same swap with a short memo lands (so the refusal is about the size)."""
    pool = await _pool(sim.market, SOL, USDC, RAYDIUM_AMM_V4)
    keypair = Keypair()
    owner = keypair.pubkey()
    swap = SwapInstruction(
        RAYDIUM_AMM_V4, pool.address, str(owner), SOL.mint, USDC.mint, LAMPORTS, 1
    )
    blockhash, lvbh = await sim.cluster.latest_blockhash()

    def signed_with_memo(memo: bytes) -> bytes:
        swap_ix = encode_swap(swap, Pubkey.new_unique(), Pubkey.new_unique())
        ixs = [Instruction(MEMO_PROGRAM, memo, []), swap_ix]
        message = MessageV0.try_compile(owner, ixs, [], blockhash)
        return bytes(VersionedTransaction(message, [keypair]))

    too_large = signed_with_memo(b"x" * PACKET_DATA_SIZE)
    assert len(too_large) > PACKET_DATA_SIZE
    with pytest.raises(InvalidTransaction, match=f"too large: {len(too_large)} bytes"):
        await sim.cluster.send_transaction(too_large, lvbh)
    assert await _version(sim.redis, pool.address) == pool.version

    fits = signed_with_memo(b"short")
    signature = await sim.cluster.send_transaction(fits, lvbh)
    status, _ = await sim.cluster.signature_status(signature)
    assert status is not None and status.err is None
    assert await _version(sim.redis, pool.address) == pool.version + 1
