"""Instruction layouts of the programs a swap transaction calls.

The transaction builder encodes with these and the simulated cluster decodes with them, so the
cluster executes exactly what the signed transaction says — nothing travels beside it.
"""

import hashlib
import struct
from dataclasses import dataclass

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from shared.market.meteora import METEORA_DLMM
from shared.market.raydium import RAYDIUM_AMM_V4, RAYDIUM_CPMM

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")

VENUE_PROGRAMS = {
    RAYDIUM_AMM_V4: "raydium",
    RAYDIUM_CPMM: "raydium",
    METEORA_DLMM: "meteora",
}


def _anchor_discriminator(name: str) -> bytes:
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]


# AMM v4 uses a one-byte instruction tag (9 = swap_base_in, 11 = swap_base_out); CPMM and DLMM
# are Anchor programs. Exact-out instructions carry (max amount in, amount out), in that order.
_SWAP_TAGS = {
    RAYDIUM_AMM_V4: bytes([9]),
    RAYDIUM_CPMM: _anchor_discriminator("swap_base_input"),
    METEORA_DLMM: _anchor_discriminator("swap"),
}
_EXACT_OUT_TAGS = {
    RAYDIUM_AMM_V4: bytes([11]),
    RAYDIUM_CPMM: _anchor_discriminator("swap_base_output"),
    METEORA_DLMM: _anchor_discriminator("swap_exact_out"),
}


@dataclass(frozen=True, slots=True)
class SwapInstruction:
    """A swap as the venue program sees it. Exact-in: spend `amount_in`, receive at least
    `min_amount_out`. Exact-out: receive exactly `min_amount_out`, spend at most `amount_in`."""

    program_id: str
    pool: str
    owner: str
    mint_in: str
    mint_out: str
    amount_in: int
    min_amount_out: int
    exact_out: bool = False


def encode_swap(swap: SwapInstruction, source: Pubkey, destination: Pubkey) -> Instruction:
    """The swap instruction: tag, `amount_in` u64, `min_amount_out` u64 (little endian)."""
    program = Pubkey.from_string(swap.program_id)
    tag = (_EXACT_OUT_TAGS if swap.exact_out else _SWAP_TAGS)[swap.program_id]
    data = tag + struct.pack("<QQ", swap.amount_in, swap.min_amount_out)
    accounts = [
        AccountMeta(Pubkey.from_string(swap.pool), is_signer=False, is_writable=True),
        AccountMeta(source, is_signer=False, is_writable=True),
        AccountMeta(destination, is_signer=False, is_writable=True),
        AccountMeta(Pubkey.from_string(swap.mint_in), is_signer=False, is_writable=False),
        AccountMeta(Pubkey.from_string(swap.mint_out), is_signer=False, is_writable=False),
        AccountMeta(Pubkey.from_string(swap.owner), is_signer=True, is_writable=True),
        AccountMeta(TOKEN_PROGRAM, is_signer=False, is_writable=False),
    ]
    return Instruction(program, data, accounts)


def decode_swap(program_id: str, data: bytes, accounts: list[Pubkey]) -> SwapInstruction | None:
    """The swap in a compiled instruction, or None when it is not a venue swap."""
    exact_in, exact_out = _SWAP_TAGS.get(program_id), _EXACT_OUT_TAGS.get(program_id)
    tag = next((t for t in (exact_in, exact_out) if t and data.startswith(t)), None)
    if tag is None or len(data) != len(tag) + 16 or len(accounts) < 6:
        return None
    amount_in, min_out = struct.unpack("<QQ", data[len(tag) :])
    return SwapInstruction(
        program_id=program_id,
        pool=str(accounts[0]),
        owner=str(accounts[5]),
        mint_in=str(accounts[3]),
        mint_out=str(accounts[4]),
        amount_in=amount_in,
        min_amount_out=min_out,
        exact_out=tag == exact_out,
    )


def pool_address(program_id: str, mint_a: str, mint_b: str, tag: str) -> str:
    """A deterministic program-derived address for a pool of `mint_a`/`mint_b`."""
    seeds = [
        b"pool",
        bytes(Pubkey.from_string(mint_a)),
        bytes(Pubkey.from_string(mint_b)),
        tag.encode(),
    ]
    return str(Pubkey.find_program_address(seeds, Pubkey.from_string(program_id))[0])
