"""Pure market math for the simulated venues: tokens, Raydium constant product, Meteora DLMM.

No I/O here: every function takes a pool state and returns a new one, so the simulation can
store pools wherever it likes and tests can check the math directly.
"""
