"""The API and the worker reach PostgreSQL and Valkey through Unix sockets when their URLs say
so (`postgresql://user@/db?host=/dir`, `unix:///path/valkey.sock`): what a deployment that
shares a machine with its database should use, and what the benchmarks use."""

from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from devstack.servers import DevstackError, EmbeddedValkey
from tests.helpers import follow
from tests.procs import deployment, submit


async def test_an_order_runs_with_every_connection_on_a_unix_socket() -> None:
    async with deployment(unix_sockets=True) as d:
        assert "host=/" in d.servers.database_url and d.servers.redis_url.startswith("unix://")
        api = await d.start_api()
        await d.start_worker()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            accepted = await submit(http)
        # Every status, committed by the worker and published through Valkey to the API.
        events = await follow(accepted["wsUrl"])
        statuses = [e["status"] for e in events]
        assert statuses == ["pending", "routing", "building", "submitted", "confirmed"], events

        conn = await asyncpg.connect(d.servers.database_url)
        try:
            # client_addr is NULL for a Unix-socket connection; the pools of both processes
            # and this one are all there.
            addrs = await conn.fetch(
                "SELECT client_addr FROM pg_stat_activity WHERE datname = current_database()"
            )
        finally:
            await conn.close()
        assert len(addrs) >= 3 and all(r["client_addr"] is None for r in addrs), addrs

        redis = Redis.from_url(d.servers.redis_url)
        try:
            clients = await redis.client_list()
        finally:
            await redis.aclose()
        # A Unix-socket client's address names the socket's path; a TCP one's is ip:port.
        sock = d.servers.valkey.socket_dir
        assert len(clients) >= 3, clients
        assert all(str(sock) in c["addr"] for c in clients), clients


def test_a_socket_folder_too_deep_for_a_socket_path_is_refused() -> None:
    deep = "/tmp/" + "d" * 100
    with pytest.raises(DevstackError, match="too long for a Unix socket path"):
        EmbeddedValkey(Path(deep) / "vk", socket_dir=Path(deep))
