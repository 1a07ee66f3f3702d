"""The worker's `GET /metrics`: a small HTTP server in the worker's own event loop.

In the loop (not prometheus_client's server thread) so a scrape can first read what is only
known by asking Redis: the queue depth and each venue's prices. A scrape costs the worker one
pipeline of pool reads and a ZCARD, bounded by `REFRESH_TIMEOUT_S`; jobs pay nothing for it.

Port: `WORKER_METRICS_PORT` (default 9101) is a base. Each worker takes the first free port from
the base up (`MAX_WORKERS_PER_HOST` of them), so workers on one host get 9101, 9102, … in the
order they start, and logs the one it took; `0` takes any free port (tests). In containers each
worker has its own network namespace and they all take the base port.
"""

import asyncio
import contextlib
import errno
import logging
import socket
from decimal import Decimal

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from shared import keys
from shared.market.routing import best_per_venue
from shared.market.tokens import PAIRS, resolve_token
from shared.metrics import CONTENT_TYPE, WorkerMetrics
from shared.sim.market import Market

log = logging.getLogger(__name__)

MAX_WORKERS_PER_HOST = 32
REFRESH_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 5.0
REFERENCE_USD = Decimal(100)  # the swap size `venue_price` is quoted for


class MetricsServer:
    """Serves `metrics` at `/metrics`; `port` is the port it bound."""

    def __init__(self, metrics: WorkerMetrics, redis: ArqRedis, market: Market) -> None:
        self.metrics, self._redis, self._market = metrics, redis, market
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, base_port: int) -> int:
        ports = [0] if base_port == 0 else range(base_port, base_port + MAX_WORKERS_PER_HOST)
        for port in ports:
            sock = _listening_socket(host, port)
            if sock is None:
                continue  # taken: another worker on this host has it
            self._server = await asyncio.start_server(self._handle, sock=sock)
            self.port = int(sock.getsockname()[1])
            return self.port
        raise RuntimeError(f"no free metrics port in {base_port}..{ports[-1]}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def refresh(self) -> None:
        """Read the queue depth and the venues' prices into their gauges."""
        self.metrics.queue_depth.set(await self._redis.zcard(keys.QUEUE_NAME))
        for base_sym, quote_sym in PAIRS:
            base, quote = resolve_token(base_sym), resolve_token(quote_sym)
            assert base is not None and quote is not None
            amount = int(REFERENCE_USD / base.ref_price_usd * 10**base.decimals)
            quotes, _ = await self._market.quotes(base, quote, amount)
            ranked = best_per_venue(quotes)
            pair = f"{base_sym}/{quote_sym}"
            for q in ranked:
                self.metrics.venue_price.labels(pair, q.dex).set(float(q.price(base, quote)))
            if len(ranked) == 2 and ranked[1].amount_out > 0:
                gap = (ranked[0].amount_out - ranked[1].amount_out) / ranked[1].amount_out
                self.metrics.venue_gap_ratio.labels(pair).set(gap)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them changes the answer
                parts = request.split()
                if (
                    len(parts) >= 2
                    and parts[0] == b"GET"
                    and parts[1].split(b"?")[0] == b"/metrics"
                ):
                    await self._refresh_in_time()
                    status, ctype, body = "200 OK", CONTENT_TYPE, self.metrics.render()
                else:
                    status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (TimeoutError, OSError) as exc:  # a scraper that went away: nothing to answer
            log.debug("metrics request dropped: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _refresh_in_time(self) -> None:
        """Refresh, or serve the last values when Redis is slow or away (the scrape still
        answers: `queue_depth` then shows the last depth read)."""
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                await self.refresh()
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("metrics refresh failed: %r", exc)


def _listening_socket(host: str, port: int) -> socket.socket | None:
    """A socket listening on host:port, or None if the port is taken. Bound here without
    SO_REUSEADDR, so of two workers starting at once exactly one gets a port: the other's
    bind fails at once (with it, both binds can succeed and the second listen fails later,
    which asyncio's servers do not all report)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(100)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        return None
    sock.setblocking(False)
    return sock
