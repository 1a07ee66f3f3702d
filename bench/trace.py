"""Every Redis command one order costs, by process: the round trips a profile only hints at.

Valkey's MONITOR streams each command the server runs; commands a Lua script runs are marked
`[N lua]`, the others name the client's address, which is matched to the API's or a worker's
sockets. One order is submitted and followed to its end on an otherwise idle engine, so the
worker's background polling (arq's queue poll every 50 ms, the market ticker) shows up too;
it is listed by command so it can be told apart.
"""

import asyncio
import contextlib
import re
import time
from collections import Counter
from typing import Any

import psutil  # type: ignore[import-untyped]
from websockets.asyncio.client import connect

from bench.http import Connection
from bench.stack import HOST, EngineProcesses

_LINE = re.compile(r'^[\d.]+ \[\d+ (?P<client>[^\]]+)\] "(?P<cmd>[^"]+)"')
_ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.01"}


def _ports(pid: int, server_port: int) -> set[int]:
    """Local ports of the process's TCP connections to the server."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in conns if c.raddr and c.raddr.port == server_port}


async def redis_per_order(engine: EngineProcesses, orders: int = 3) -> dict[str, Any]:
    """Redis commands per order by process, averaged over `orders` orders run one at a time."""
    valkey_port = engine.servers.valkey.port
    reader, writer = await asyncio.open_connection(HOST, valkey_port)
    writer.write(b"MONITOR\r\n")
    await reader.readline()  # +OK
    lines: list[str] = []

    async def collect() -> None:
        while True:
            raw = await reader.readline()
            if not raw:
                return
            lines.append(raw.decode(errors="replace").strip().lstrip("+"))

    collector = asyncio.create_task(collect())
    started = time.monotonic()
    try:
        http = Connection(HOST, engine.port)
        for _ in range(orders):
            _, body = await http.request("POST", "/api/orders/execute", _ORDER)
            async with connect(body["wsUrl"], proxy=None) as ws:
                async for _message in ws:
                    pass
        http.close()
        await asyncio.sleep(0.05)  # let the last commands arrive
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        writer.close()
    elapsed_s = time.monotonic() - started
    assert engine.api is not None
    owners = {"api": _ports(engine.api.pid, valkey_port)}
    owners["worker"] = set().union(*(_ports(w.pid, valkey_port) for w in engine.workers))
    by: dict[str, Counter[str]] = {"api": Counter(), "worker": Counter(), "lua": Counter()}
    other = Counter[str]()
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        client, cmd = m["client"], m["cmd"].upper()
        if client == "lua":
            by["lua"][cmd] += 1
            continue
        port = int(client.rsplit(":", 1)[-1]) if ":" in client else -1
        owner = next((name for name, ports in owners.items() if port in ports), None)
        (by[owner] if owner else other)[cmd] += 1
    return {
        "orders": orders,
        "window_s": round(elapsed_s, 2),
        "note": "round trips = commands outside Lua (a MULTI…EXEC pipeline is one round trip "
        "but several commands); includes the worker's background polling in the window",
        **{
            f"{name}_per_order": {k: round(v / orders, 1) for k, v in c.most_common()}
            for name, c in by.items()
        },
        "unattributed": dict(other.most_common()),
    }
