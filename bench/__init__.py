"""Benchmarks of the order execution engine (`make bench`, `make bench-full`).

Everything runs on this one machine: PostgreSQL, Valkey, the API, the worker(s) and the load
generators, which are separate processes so a client never shares an event loop with a server.
Figures are medians of several runs; ratios are taken within the same run.
"""
