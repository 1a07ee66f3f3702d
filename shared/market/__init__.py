"""Pure market math for the simulated venues: tokens, Raydium constant product, Meteora DLMM.

No I/O here: every function takes a pool state and returns a new one, so the simulation can
store pools wherever it likes and tests can check the math directly.
"""

from shared.market.meteora import (
    METEORA_DLMM,
    DlmmPool,
    bin_id_for_price,
    bin_price,
    dlmm_base_fee_rate,
    dlmm_fee_rate,
    dlmm_new,
    dlmm_quote,
    dlmm_reprice,
    dlmm_spot_price,
    dlmm_swap,
)
from shared.market.raydium import (
    CPMM_FEE_TIERS_BPS,
    RAYDIUM_AMM_V4,
    RAYDIUM_CPMM,
    CpPool,
    cp_new,
    cp_quote,
    cp_reprice,
    cp_spot_price,
    cp_swap,
)
from shared.market.tokens import (
    NATIVE_SOL_MINT,
    PAIRS,
    TOKENS,
    Token,
    from_base_units,
    price_from_base_units,
    price_to_base_units,
    resolve_token,
    to_base_units,
)
from shared.market.types import InsufficientLiquidity, SwapQuote

__all__ = [
    "CPMM_FEE_TIERS_BPS",
    "METEORA_DLMM",
    "NATIVE_SOL_MINT",
    "PAIRS",
    "RAYDIUM_AMM_V4",
    "RAYDIUM_CPMM",
    "TOKENS",
    "CpPool",
    "DlmmPool",
    "InsufficientLiquidity",
    "SwapQuote",
    "Token",
    "bin_id_for_price",
    "bin_price",
    "cp_new",
    "cp_quote",
    "cp_reprice",
    "cp_spot_price",
    "cp_swap",
    "dlmm_base_fee_rate",
    "dlmm_fee_rate",
    "dlmm_new",
    "dlmm_quote",
    "dlmm_reprice",
    "dlmm_spot_price",
    "dlmm_swap",
    "from_base_units",
    "price_from_base_units",
    "price_to_base_units",
    "resolve_token",
    "to_base_units",
]
