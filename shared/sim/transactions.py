"""Building and signing real Solana versioned transactions for a swap."""

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction

from shared.market.tokens import NATIVE_SOL_MINT
from shared.sim.programs import (
    ATA_PROGRAM,
    MEMO_PROGRAM,
    SYSTEM_PROGRAM,
    TOKEN_PROGRAM,
    SwapInstruction,
    encode_swap,
)

COMPUTE_UNIT_LIMIT = 200_000  # a one-leg route
COMPUTE_UNITS_PER_EXTRA_LEG = 100_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000  # the most a Solana transaction may ask for
PACKET_DATA_SIZE = 1_232  # the largest serialized transaction a Solana cluster accepts
_SYNC_NATIVE = bytes([17])
_CLOSE_ACCOUNT = bytes([9])
_CREATE_IDEMPOTENT = bytes([1])


@dataclass(frozen=True, slots=True)
class SignedSwap:
    """A signed transaction and what the order records about it before sending."""

    signature: str
    raw: bytes
    wrap_sol: bool
    unwrap_sol: bool
    compute_unit_price: int
    compute_unit_limit: int = COMPUTE_UNIT_LIMIT

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode()


@lru_cache(maxsize=1024)
def _ata(owner: Pubkey, mint: str) -> Pubkey:
    """The owner's associated token account for `mint` (a PDA search: worth remembering)."""
    return get_associated_token_address(owner, Pubkey.from_string(mint))


def _create_ata(payer: Pubkey, owner: Pubkey, mint: str) -> Instruction:
    ata = _ata(owner, mint)
    accounts = [
        AccountMeta(payer, is_signer=True, is_writable=True),
        AccountMeta(ata, is_signer=False, is_writable=True),
        AccountMeta(owner, is_signer=False, is_writable=False),
        AccountMeta(Pubkey.from_string(mint), is_signer=False, is_writable=False),
        AccountMeta(SYSTEM_PROGRAM, is_signer=False, is_writable=False),
        AccountMeta(TOKEN_PROGRAM, is_signer=False, is_writable=False),
    ]
    return Instruction(ATA_PROGRAM, _CREATE_IDEMPOTENT, accounts)


def compute_unit_limit(legs: int) -> int:
    """The compute budget a route of `legs` swap instructions asks for."""
    return min(
        COMPUTE_UNIT_LIMIT + COMPUTE_UNITS_PER_EXTRA_LEG * (legs - 1), MAX_COMPUTE_UNIT_LIMIT
    )


def build_swap_transaction(
    keypair: Keypair,
    swaps: Sequence[SwapInstruction],
    blockhash: Hash,
    compute_unit_price: int,
    memo: str,
) -> SignedSwap:
    """A v0 transaction for a route: compute budget, memo, the token accounts its legs pay
    into, SOL wrapped if the route pays SOL, one swap instruction per leg in order, and the
    wrapped-SOL account closed at the end whenever SOL passes through it (returning what the
    legs did not spend or left over)."""
    owner = keypair.pubkey()
    first, last = swaps[0], swaps[-1]
    wrap = first.mint_in == NATIVE_SOL_MINT
    unwrap = last.mint_out == NATIVE_SOL_MINT
    touches_sol = any(NATIVE_SOL_MINT in (s.mint_in, s.mint_out) for s in swaps)
    limit = compute_unit_limit(len(swaps))
    ixs = [
        set_compute_unit_limit(limit),
        set_compute_unit_price(compute_unit_price),
        # The memo (order id + attempt) makes each attempt's transaction unique: two identical
        # orders in the same slot would otherwise sign identical bytes, and a cluster keeps
        # only one transaction per signature.
        Instruction(MEMO_PROGRAM, memo.encode(), []),
    ]
    outputs = list(dict.fromkeys(s.mint_out for s in swaps))
    ixs += [_create_ata(owner, owner, m) for m in outputs]
    if wrap:
        source = _ata(owner, NATIVE_SOL_MINT)
        spend = sum(s.amount_in for s in swaps if s.mint_in == NATIVE_SOL_MINT)
        ixs += [
            _create_ata(owner, owner, NATIVE_SOL_MINT),
            transfer(TransferParams(from_pubkey=owner, to_pubkey=source, lamports=spend)),
            Instruction(TOKEN_PROGRAM, _SYNC_NATIVE, [AccountMeta(source, False, True)]),
        ]
    for swap in swaps:
        ixs.append(encode_swap(swap, _ata(owner, swap.mint_in), _ata(owner, swap.mint_out)))
    if touches_sol:
        wsol = _ata(owner, NATIVE_SOL_MINT)
        closing = [
            AccountMeta(wsol, False, True),
            AccountMeta(owner, False, True),
            AccountMeta(owner, True, False),
        ]
        ixs.append(Instruction(TOKEN_PROGRAM, _CLOSE_ACCOUNT, closing))
    message = MessageV0.try_compile(owner, ixs, [], blockhash)
    # Sign the message bytes and assemble: `VersionedTransaction(message, [keypair])` gives the
    # same bytes at about twice the cost (bench/README.md).
    signature = keypair.sign_message(to_bytes_versioned(message))
    tx = VersionedTransaction.populate(message, [signature])
    raw = bytes(tx)
    if len(raw) > PACKET_DATA_SIZE:  # the router keeps routes small enough: a bug if not
        raise ValueError(f"a {len(swaps)}-leg route is {len(raw)} bytes, over {PACKET_DATA_SIZE}")
    return SignedSwap(
        signature=str(tx.signatures[0]),
        raw=raw,
        wrap_sol=wrap,
        unwrap_sol=unwrap,
        compute_unit_price=compute_unit_price,
        compute_unit_limit=limit,
    )
