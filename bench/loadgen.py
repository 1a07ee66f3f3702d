"""Load generator, run as its own process: `python -m bench.loadgen '<json config>'`.

Modes (config["mode"]):
- `follow`: submit orders over HTTP and follow each on its WebSocket to a terminal status.
  Closed loop with `clients` concurrent clients (for `orders` orders, or for `duration_s`),
  or open loop at `rate_per_s` orders/s.
- `post`: submit orders only (the worker drains them); open loop at `rate_per_s`, or as fast
  as `clients` kept-alive connections allow when the rate is 0.
- `fanout`: hold one WebSocket per subscriber on the given order ids and time every event.

It writes JSON lines to stdout: `{"progress": n}` about twice a second, `{"connected": n}` once
every fan-out socket is open, and a final `{"result": {...}}` with the raw samples.

Event delivery latency is `receipt - at`, where `at` is the event row's clock_timestamp() in
PostgreSQL, taken inside the transaction just before it commits; both clocks are this machine's.
Only events committed after the socket opened count as live; earlier ones are replays (from
the API's memory of recent orders, or PostgreSQL) and are only counted.
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
import uvloop

from bench import wsclient
from bench.http import Connection

ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.01"}
TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})
PROGRESS_EVERY_S = 0.5


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()


def _at_epoch(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


class Samples:
    """Everything one load-generator process measured."""

    def __init__(self) -> None:
        self.done = 0
        self.errors: dict[str, int] = {}
        self.submit_ms: list[float] = []  # request sent -> response read (service time)
        self.sched_ms: list[float] = []  # open loop: scheduled send -> response read
        self.e2e_ms: list[float] = []  # request sent -> terminal event received
        self.delivery_ms: list[float] = []  # live events: commit -> receipt
        self.statuses: dict[str, int] = {}
        self.events = 0
        self.replayed = 0
        self.gaps = 0  # sockets whose seqs were not 1..n without a hole
        self.bad_close = 0
        self.connect_ms: list[float] = []
        self.first_send = 0.0
        self.first_done = 0.0
        self.last_done = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def result(self) -> dict[str, Any]:
        r = {k: v for k, v in vars(self).items()}
        for k, v in r.items():
            if isinstance(v, list):
                r[k] = [round(x, 3) for x in v]
        return r


async def follow_socket(url: str, s: Samples, after_connect: asyncio.Event | None = None) -> str:
    """Read one order's events until the server closes; returns the last status seen."""
    last_seq, status = 0, ""

    def on_message(raw: bytes, now: float) -> None:
        nonlocal last_seq, status
        event = orjson.loads(raw)
        if "seq" not in event:
            return
        s.events += 1
        at = _at_epoch(event["at"])
        if at >= client.opened_at:
            s.delivery_ms.append((now - at) * 1000)
        else:
            s.replayed += 1
        if event["seq"] != last_seq + 1:
            s.gaps += 1
        last_seq, status = event["seq"], event["status"]

    started = time.time()
    client = wsclient.for_url(url, on_message)
    await client.open(timeout_s=60)
    s.connect_ms.append((client.opened_at - started) * 1000)
    if after_connect is not None:
        after_connect.set()
    if await client.closed != 1000:
        s.bad_close += 1
    return status


async def submit(conn: Connection, s: Samples) -> dict[str, Any] | None:
    sent = time.perf_counter()
    try:
        code, body = await conn.request("POST", "/api/orders/execute", ORDER)
    except (OSError, asyncio.IncompleteReadError):
        s.error("http-connection")
        return None
    s.submit_ms.append((time.perf_counter() - sent) * 1000)
    if code != 200:
        s.error(f"http-{code}")
        return None
    return dict(body)


async def one_order(conn: Connection, s: Samples) -> None:
    t0 = time.time()
    accepted = await submit(conn, s)
    if accepted is None:
        return
    try:
        status = await follow_socket(accepted["wsUrl"], s)
    except (OSError, TimeoutError) as exc:
        s.error(f"ws-{type(exc).__name__}")
        return
    now = time.time()
    s.e2e_ms.append((now - t0) * 1000)
    s.statuses[status] = s.statuses.get(status, 0) + 1
    s.done += 1
    s.first_done = s.first_done or now
    s.last_done = now


# One request-and-whatever on a connection; the float is when an open loop scheduled it.
Job = Callable[[Connection, float | None], Awaitable[None]]


async def open_loop(host: str, port: int, total: int, rate_per_s: float, job: Job) -> None:
    """Start `total` jobs at `rate_per_s` whatever pace the answers come at, each on an idle
    kept-alive connection (a new one when none is idle)."""
    idle: list[Connection] = []
    tasks = set()

    async def scheduled(at: float) -> None:
        conn = idle.pop() if idle else Connection(host, port)
        try:
            await job(conn, at)
        finally:
            idle.append(conn)

    start = time.perf_counter()
    for i in range(total):
        at = start + i / rate_per_s
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(scheduled(at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()


async def closed_loop(
    host: str, port: int, clients: int, total: int, job: Job, stop_at: float = float("inf")
) -> None:
    """`clients` connections, each running one job after another until `total` have started
    (or `stop_at`, a time.monotonic(), has passed)."""
    remaining = total

    async def client() -> None:
        nonlocal remaining
        conn = Connection(host, port)
        while remaining > 0 and time.monotonic() < stop_at:
            remaining -= 1
            await job(conn, None)
        conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))


async def run_follow(cfg: dict[str, Any], s: Samples) -> None:
    host, port, total = cfg["host"], cfg["port"], cfg["orders"]
    s.first_send = time.time()

    async def order(conn: Connection, _scheduled: float | None) -> None:
        await one_order(conn, s)

    if cfg.get("rate_per_s"):
        await open_loop(host, port, total, cfg["rate_per_s"], order)
        return
    # With a duration, clients stop starting orders once it is over (and finish their own).
    stop_at = time.monotonic() + cfg["duration_s"] if cfg.get("duration_s") else float("inf")
    await closed_loop(host, port, cfg["clients"], total, order, stop_at)


async def run_post(cfg: dict[str, Any], s: Samples) -> None:
    host, port, total = cfg["host"], cfg["port"], cfg["orders"]
    s.first_send = time.time()

    async def post(conn: Connection, scheduled: float | None) -> None:
        if await submit(conn, s) is not None:
            s.done += 1
            s.last_done = time.time()
            if scheduled is not None:
                s.sched_ms.append((time.perf_counter() - scheduled) * 1000)

    if cfg.get("rate_per_s"):
        await open_loop(host, port, total, cfg["rate_per_s"], post)
    else:
        await closed_loop(host, port, cfg["clients"], total, post)


async def run_fanout(cfg: dict[str, Any], s: Samples) -> None:
    ids: list[str] = cfg["order_ids"]
    base = f"ws://{cfg['host']}:{cfg['port']}/api/orders/execute?orderId="
    gate = asyncio.Semaphore(cfg.get("connect_concurrency", 100))
    settled = 0  # sockets that opened or failed to
    all_settled = asyncio.Event()

    async def subscriber(i: int) -> None:
        opened = asyncio.Event()

        async def release_when_open() -> None:
            nonlocal settled
            await opened.wait()
            gate.release()
            settled += 1
            if settled == cfg["subscribers"]:
                all_settled.set()

        await gate.acquire()
        releaser = asyncio.create_task(release_when_open())
        try:
            status = await follow_socket(base + ids[i % len(ids)], s, opened)
            s.statuses[status] = s.statuses.get(status, 0) + 1
            s.done += 1
            s.last_done = time.time()
        except (OSError, TimeoutError) as exc:
            s.error(f"ws-{type(exc).__name__}")
        finally:
            if not opened.is_set():
                opened.set()
            await releaser

    tasks = [asyncio.create_task(subscriber(i)) for i in range(cfg["subscribers"])]

    async def announce() -> None:
        await all_settled.wait()
        emit({"connected": len(s.connect_ms), "errors": s.errors, "cpu_s": time.process_time()})

    announcer = asyncio.create_task(announce())
    await asyncio.gather(*tasks)
    await announcer


async def main(cfg: dict[str, Any]) -> None:
    s = Samples()
    runner = {"follow": run_follow, "post": run_post, "fanout": run_fanout}[cfg["mode"]]

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            emit({"progress": s.done, "events": s.events, "errors": sum(s.errors.values())})

    reporter = asyncio.create_task(progress())
    cpu_at_start = time.process_time()  # leaves out this process's start-up
    try:
        await asyncio.wait_for(runner(cfg, s), cfg.get("timeout_s", 600))
    except TimeoutError:
        s.error("timeout")
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    if not cfg.get("samples", True):
        for name in ("submit_ms", "sched_ms", "e2e_ms", "delivery_ms", "connect_ms"):
            setattr(s, name, [])
    cpu_now = time.process_time()
    cpu = {"cpu_s": round(cpu_now - cpu_at_start, 3), "cpu_total_s": cpu_now}
    emit({"result": s.result() | cpu})


if __name__ == "__main__":
    uvloop.run(main(orjson.loads(sys.argv[1])))
