"""Process-level test helpers: our own PostgreSQL and Valkey, and the API and worker as the real
`python -m app` / `python -m worker` subprocesses, so a test can SIGKILL, SIGTERM and restart them.

Nothing here touches the machine's shared servers: every test gets servers in a fresh folder.
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets
from redis.asyncio import Redis

from devstack.processes import spawn
from devstack.servers import ServerPair
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"confirmed", "failed", "cancelled", "expired"}
READY_TIMEOUT_S = 30.0
_POLL_S = 0.05

# Settings every process-level test starts from: short leases and sweeps so that recovery is
# quick, no random cluster faults unless a test asks, a still market (no ticker) so that pool
# versions count the swaps that landed, and no rate limit.
BASE_ENV: dict[str, str] = {
    "SIM_LATENCY_SCALE": "0.1",
    "SIM_DROP_RATE": "0",
    "SIM_EXPIRY_RATE": "0",
    "SIM_RPC_TIMEOUT_RATE": "0",
    "SIM_TICK_MS": "0",
    "SIM_SEED": "11",
    "JOB_LEASE_S": "2",
    "SWEEP_INTERVAL_S": "1",
    "STALE_ORDER_S": "3",
    "BACKOFF_BASE_MS": "50",
    "RATE_LIMIT_PER_S": "0",
    "SHUTDOWN_GRACE_S": "20",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "text",
}


class Servers(ServerPair):
    """A PostgreSQL (no fsync unless `durable`: a SIGKILL may then lose the last commits) and a
    persistent Valkey of this test's own, in `root`."""

    def __init__(self, root: Path, unix_sockets: bool = False, durable: bool = False) -> None:
        super().__init__(root, fast=not durable, persist=True, unix_sockets=unix_sockets)

    def restart_redis(self) -> None:
        """Graceful restart on the same data dir (SHUTDOWN flushes the append-only file)."""
        before = self.redis_url
        self.valkey.stop()
        self.valkey.start()
        assert self.redis_url == before, "Valkey came back on another port"

    def restart_postgres(self) -> None:
        before = self.database_url
        self.pg.start()
        assert self.database_url == before, "PostgreSQL came back on another port"


@contextlib.contextmanager
def own_servers(unix_sockets: bool = False, durable: bool = False) -> Iterator[Servers]:
    """Start a PostgreSQL (no fsync unless `durable`) and a persistent Valkey in a fresh folder;
    kill both after. With `unix_sockets` the URLs reach both through Unix sockets instead of
    TCP."""
    with tempfile.TemporaryDirectory(prefix="oee-procs-") as tmp:
        os.chmod(tmp, 0o755)  # as root PostgreSQL runs as `nobody`, which must reach its data dir
        servers = Servers(Path(tmp), unix_sockets, durable)
        try:
            servers.start()
            yield servers
        finally:
            with contextlib.suppress(Exception):
                servers.kill()


def server_pids(servers: Servers, which: str) -> list[int]:
    """The running server's processes: the postmaster and its backends, or Valkey."""
    pids = servers.pids("postgres" if which == "postgres" else "valkey")
    assert pids, f"{which} is not running"
    return pids


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the processes (a hung server or a network partition: connections are accepted
    by the kernel but nothing answers), and SIGCONT them afterwards whatever happens."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@dataclass
class Proc:
    """One `python -m app` or `python -m worker` subprocess and its log file."""

    name: str
    popen: "subprocess.Popen[bytes]"
    log_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        assert self.port is not None, f"{self.name} is not an API process"
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would, and reap it."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    async def terminate(self, timeout_s: float) -> int:
        """SIGTERM and wait for the exit code."""
        self.popen.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout_s)

    async def wait_exit(self, timeout_s: float) -> int:
        """The exit code, once the process has exited (without blocking the event loop)."""
        return await asyncio.to_thread(self.popen.wait, timeout_s)

    def log(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Deployment:
    """API and worker subprocesses sharing one set of servers and one environment.

    Every process started here is SIGKILLed in `close()` if it is still running, so a test that
    fails half-way leaves nothing behind.
    """

    servers: Servers
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    _counter: int = 0

    def _spawn(self, name: str, module: str, env: dict[str, str], port: int | None) -> Proc:
        self._counter += 1
        log_path = self.servers.root / f"{name}-{self._counter}.log"
        popen = spawn([sys.executable, "-m", module], env, log=log_path, cwd=ROOT)
        proc = Proc(f"{name}-{self._counter}", popen, log_path, port)
        self.procs.append(proc)
        return proc

    async def start_api(self) -> Proc:
        """Start an API process and wait until its /health says both servers answer."""
        port = free_port()
        proc = self._spawn("api", "app", self.env | {"PORT": str(port), "HOST": "127.0.0.1"}, port)
        await wait_healthy(proc)
        return proc

    async def start_worker(self, **env: str) -> Proc:
        """Start a worker process and wait until it has connected and is taking jobs."""
        proc = self._spawn("worker", "worker", self.env | env, None)
        await wait_for_log(proc, "worker ready")
        return proc

    def worker_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.kill()


@contextlib.asynccontextmanager
async def supervised_workers(d: Deployment, count: int) -> AsyncIterator[list[Proc]]:
    """Keep `count` workers running, starting a new one whenever one exits, as a process
    supervisor (systemd, `restart: unless-stopped`) would. Yields the live list, which a test
    may SIGKILL members of; `restarts` of a worker show up as new entries in `d.procs`."""
    workers = [await d.start_worker() for _ in range(count)]

    async def watch() -> None:
        while True:
            for i, proc in enumerate(workers):
                if not proc.alive():
                    workers[i] = await d.start_worker()
            await asyncio.sleep(0.1)  # sleep-ok: a supervisor polling its children

    task = asyncio.create_task(watch())
    try:
        yield workers
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def process_env(servers: Servers, **overrides: str) -> dict[str, str]:
    """The environment for our subprocesses: the test's servers and `BASE_ENV` plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TEST_"))}
    env |= BASE_ENV | {
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "DATA_DIR": str(servers.root / "data"),
    }
    return env | overrides


@contextlib.asynccontextmanager
async def deployment(
    unix_sockets: bool = False, durable: bool = False, **overrides: str
) -> AsyncIterator[Deployment]:
    """Own servers plus a `Deployment` on them; everything is killed and removed afterwards."""
    with own_servers(unix_sockets, durable) as servers:
        deploy = Deployment(servers, process_env(servers, **overrides))
        try:
            yield deploy
        finally:
            deploy.close()


async def wait_healthy(proc: Proc, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll GET /health until 200 (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=proc.base_url, timeout=2) as http:
        while True:
            assert proc.alive(), f"{proc.name} exited during start-up:\n{proc.log()}"
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/health")).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{proc.name} not healthy:\n{proc.log()}"
            await asyncio.sleep(_POLL_S)  # sleep-ok: polling for readiness


async def wait_for_log(proc: Proc, text: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the process's log until `text` appears (how a worker says it is ready)."""
    deadline = time.monotonic() + timeout_s
    while text not in proc.log(lines=10_000):
        assert proc.alive(), f"{proc.name} exited:\n{proc.log()}"
        assert time.monotonic() < deadline, f"{proc.name} never logged {text!r}:\n{proc.log()}"
        await asyncio.sleep(_POLL_S)  # sleep-ok: polling for readiness


async def submit(http: httpx.AsyncClient, amount: str = "1", **fields: Any) -> dict[str, Any]:
    """POST a SOL→USDC market order (or `fields`) and return the 200 body."""
    body = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": amount} | fields
    response = await http.post("/api/orders/execute", json=body)
    assert response.status_code == 200, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def events_until(
    ws: websockets.ClientConnection, statuses: set[str], timeout_s: float
) -> list[dict[str, Any]]:
    """Read events until one has a status in `statuses` (returned last), with a deadline."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        async for message in ws:
            seen.append(orjson.loads(message))
            if seen[-1]["status"] in statuses:
                return seen
    raise AssertionError(f"socket closed before {statuses}: {[e['status'] for e in seen]}")


async def wait_submitted(ws_url: str, timeout_s: float = 15) -> None:
    """Follow an order until it has sent its transaction (`submitted`), failing if it ends first."""
    async with websockets.connect(ws_url) as ws:
        seen = await events_until(ws, {"submitted"} | TERMINAL, timeout_s=timeout_s)
    assert seen[-1]["status"] == "submitted", seen


async def wait_order_terminal(
    database_url: str,
    order_id: str,
    timeout_s: float,
    poll_s: float = 0.1,
    redis_url: str | None = None,
) -> asyncpg.Record:
    """Poll PostgreSQL (the source of truth) until the order is terminal; its row. On timeout
    the message says where the order and (given `redis_url`) its arq job were left."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", uuid.UUID(order_id))
            assert row is not None, f"order {order_id} does not exist"
            if row["status"] in TERMINAL:
                return row
            if time.monotonic() > deadline:
                where = f"order {order_id} stuck in {row['status']} (runs={row['runs']})"
                if redis_url is not None:
                    redis = Redis.from_url(redis_url)
                    try:
                        where += f"; job: {await job_state(redis, order_id)}"
                    finally:
                        await redis.aclose()
                raise AssertionError(where)
            await asyncio.sleep(poll_s)  # sleep-ok: polling the source of truth with a deadline
    finally:
        await conn.close()


async def job_state(redis: Redis, order_id: str) -> str:
    """Where arq has the order's job, for failure messages."""
    score = await redis.zscore("oee:queue", order_id)
    ttl = await redis.pttl(f"arq:in-progress:{order_id}")
    job = await redis.exists(f"arq:job:{order_id}")
    tries = await redis.get(f"arq:retry:{order_id}")
    return f"queued={score is not None} job={bool(job)} in-progress ttl={ttl} ms tries={tries}"


# --- "exactly one execution" ------------------------------------------------------------------


@dataclass(frozen=True)
class Executions:
    """What the simulated cluster recorded for the signatures one order signed."""

    signatures: list[str]  # every distinct txHash of the building events, in order
    landed_ok: list[str]  # those with a success record on the cluster
    landed_err: list[str]  # those that landed but failed on chain (slippage, liquidity)
    amount_out: dict[str, int]


async def order_executions(conn: asyncpg.Connection, redis: Redis, order_id: Any) -> Executions:
    """Every signature the order signed (from its `building` events) and what became of each."""
    rows = await conn.fetch(
        "SELECT data->>'txHash' AS sig FROM order_events"
        " WHERE order_id = $1 AND status = 'building' ORDER BY seq",
        uuid.UUID(str(order_id)),
    )
    # The same signature twice (two runs signed identical bytes) is still one transaction.
    signatures = list(dict.fromkeys(r["sig"] for r in rows))
    ok, err, out = [], [], {}
    for sig in signatures:
        raw = await redis.get(f"oee:cluster:sig:{sig}")
        if raw is None:
            continue
        record = orjson.loads(raw)
        if record.get("err") is None:
            ok.append(sig)
            out[sig] = int(record["amountOut"])
        else:
            err.append(sig)
    return Executions(signatures, ok, err, out)


async def assert_executed_once(conn: asyncpg.Connection, redis: Redis, order_id: Any) -> None:
    """A confirmed order has exactly one successful swap on the cluster, the one it reports;
    a failed order has none."""
    row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", uuid.UUID(str(order_id)))
    assert row is not None
    ex = await order_executions(conn, redis, order_id)
    if row["status"] == "confirmed":
        assert len(ex.landed_ok) == 1, (order_id, ex)
        assert ex.landed_ok[0] == row["tx_hash"], (order_id, row["tx_hash"], ex)
        assert ex.amount_out[row["tx_hash"]] == int(row["amount_out"]), (order_id, ex)
    else:
        assert ex.landed_ok == [], (order_id, row["status"], ex)


async def total_swaps_landed(redis: Redis) -> tuple[int, int]:
    """(successful transactions on the cluster, the transactions every pool's version counts).

    With the market ticker off, a pool's version moves only when a swap lands on it: a
    transaction whose route has legs on n pools moves n versions. The second number is the sum
    of the versions less each landed route's extra pools, so the two agree and count every
    execution, including any signed without a `building` event.
    """
    ok, extra = 0, 0
    async for key in redis.scan_iter(match="oee:cluster:sig:*", count=1000):
        raw = await redis.get(key)
        record = {} if raw is None else orjson.loads(raw)
        if raw is not None and record.get("err") is None:
            ok += 1
            extra += max(0, len({leg["pool"] for leg in record.get("legs", [])}) - 1)
    versions = 0
    async for key in redis.scan_iter(match="oee:market:ver:*", count=1000):
        versions += int(await redis.get(key) or 0)
    return ok, versions - extra


async def assert_gapless(conn: asyncpg.Connection, order_id: Any | None = None) -> None:
    """Every order's events are seq 1..n with no gap, and n is the order's last_seq."""
    rows = await conn.fetch(
        """
        SELECT o.id, o.last_seq, array_agg(e.seq ORDER BY e.seq) AS seqs
        FROM orders o JOIN order_events e ON e.order_id = o.id
        WHERE $1::uuid IS NULL OR o.id = $1
        GROUP BY o.id, o.last_seq
        """,
        None if order_id is None else uuid.UUID(str(order_id)),
    )
    assert rows, "no events at all"
    for r in rows:
        assert list(r["seqs"]) == list(range(1, len(r["seqs"]) + 1)), (r["id"], r["seqs"])
        assert r["last_seq"] == len(r["seqs"]), (r["id"], r["last_seq"], r["seqs"])
