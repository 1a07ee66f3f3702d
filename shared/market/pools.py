"""One interface over both venues' pool math, and the pools' stored (JSON) form."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson

from shared.market.meteora import (
    METEORA_DLMM,
    DlmmPool,
    dlmm_quote,
    dlmm_reprice,
    dlmm_spot_price,
    dlmm_swap,
)
from shared.market.raydium import (
    RAYDIUM_AMM_V4,
    CpPool,
    cp_quote,
    cp_reprice,
    cp_spot_price,
    cp_swap,
)
from shared.market.types import SwapQuote

Venue = Literal["raydium", "meteora"]
VENUE_NAMES: dict[str, str] = {"raydium": "Raydium", "meteora": "Meteora"}
# The program's own error name for "output below the minimum the user signed for".
SLIPPAGE_ERRORS: dict[str, str] = {
    "raydium": "ExceededSlippage",
    "meteora": "ExceededAmountSlippageTolerance",
}


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool of either venue at a known version (the version guards concurrent writes)."""

    venue: Venue
    state: CpPool | DlmmPool
    version: int

    @property
    def address(self) -> str:
        return self.state.address

    @property
    def program_id(self) -> str:
        return self.state.program_id if isinstance(self.state, CpPool) else METEORA_DLMM

    @property
    def mints(self) -> tuple[str, str]:
        s = self.state
        return (s.mint_a, s.mint_b) if isinstance(s, CpPool) else (s.mint_x, s.mint_y)

    @property
    def kind(self) -> str:
        s = self.state
        if isinstance(s, DlmmPool):
            return f"DLMM bin {s.bin_step}"
        if s.program_id == RAYDIUM_AMM_V4:
            return "AMM v4"
        return f"CPMM {Decimal(s.fee_bps) / 100:g}%"

    def _forward(self, mint_in: str) -> bool:
        first, second = self.mints
        if mint_in not in (first, second):
            raise ValueError(f"{mint_in} is not traded by pool {self.address}")
        return mint_in == first

    def quote(self, mint_in: str, amount_in: int, now_ts: int) -> SwapQuote:
        """Exact-in quote; raises `InsufficientLiquidity` when the pool cannot fill it."""
        s, forward = self.state, self._forward(mint_in)
        if isinstance(s, CpPool):
            return cp_quote(s, forward, amount_in)
        return dlmm_quote(s, forward, amount_in, now_ts)

    def swap(self, mint_in: str, amount_in: int, now_ts: int) -> tuple["Pool", SwapQuote]:
        """The pool after the swap (version + 1) and the fill."""
        s, forward = self.state, self._forward(mint_in)
        new_state: CpPool | DlmmPool
        if isinstance(s, CpPool):
            new_state, fill = cp_swap(s, forward, amount_in)
        else:
            new_state, fill = dlmm_swap(s, forward, amount_in, now_ts)
        return Pool(self.venue, new_state, self.version + 1), fill

    def spot_price(self, mint_in: str) -> Decimal:
        """Output base units per input base unit at the current mid, before fees."""
        s, forward = self.state, self._forward(mint_in)
        return cp_spot_price(s, forward) if isinstance(s, CpPool) else dlmm_spot_price(s, forward)

    def repriced(self, price_second_per_first: Decimal, now_ts: int) -> "Pool":
        s = self.state
        new_state: CpPool | DlmmPool
        if isinstance(s, CpPool):
            new_state = cp_reprice(s, price_second_per_first)
        else:
            new_state = dlmm_reprice(s, price_second_per_first, now_ts)
        return Pool(self.venue, new_state, self.version + 1)

    def dumps(self) -> str:
        kind = "cp" if isinstance(self.state, CpPool) else "dlmm"
        return orjson.dumps(
            {
                "venue": self.venue,
                "type": kind,
                "version": self.version,
                "state": self.state.to_dict(),
            }
        ).decode()

    @classmethod
    def loads(cls, raw: bytes | str) -> "Pool":
        data: dict[str, Any] = orjson.loads(raw)
        state_cls = CpPool if data["type"] == "cp" else DlmmPool
        return cls(data["venue"], state_cls.from_dict(data["state"]), int(data["version"]))
