"""The API and the worker reach PostgreSQL and Valkey through Unix sockets when their URLs say
so (`postgresql://user@/db?host=/dir`, `unix:///path/valkey.sock`): what a deployment that
shares a machine with its database should use, and what the benchmarks use."""

from pathlib import Path
from typing import Any

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
        api_only = await _connections(d.servers.database_url, d.servers.redis_url)
        await d.start_worker()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            accepted = await submit(http)
        # Every status, committed by the worker and published through Valkey to the API.
        events = await follow(accepted["wsUrl"])
        statuses = [e["status"] for e in events]
        assert statuses == ["pending", "routing", "building", "submitted", "confirmed"], events

        pg, valkey = await _connections(d.servers.database_url, d.servers.redis_url)
        # The worker's connections are among them (more than the API's and this test's)...
        assert len(pg) > len(api_only[0]) and len(valkey) > len(api_only[1])
        # ...and none is TCP: client_addr is NULL for a Unix-socket session, and a Valkey
        # client's address names the socket's path (a TCP one's is ip:port).
        assert all(addr is None for addr in pg), pg
        sock = str(d.servers.valkey.socket_dir)
        assert all(sock in addr for addr in valkey), valkey


async def _connections(database_url: str, redis_url: str) -> tuple[list[Any], list[str]]:
    """The client address of every PostgreSQL session on the database and every Valkey client
    (this test's own included)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT client_addr FROM pg_stat_activity WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        clients = await redis.client_list()
    finally:
        await redis.aclose()
    return [r["client_addr"] for r in rows], [c["addr"] for c in clients]


def test_a_socket_folder_too_deep_for_a_socket_path_is_refused() -> None:
    deep = "/tmp/" + "d" * 100
    with pytest.raises(DevstackError, match="too long for a Unix socket path"):
        EmbeddedValkey(Path(deep) / "vk", socket_dir=Path(deep))


def test_a_socket_folder_a_url_cannot_carry_as_is_is_refused() -> None:
    with pytest.raises(DevstackError, match="use only letters"):
        EmbeddedValkey(Path("/tmp/a b/vk"), socket_dir=Path("/tmp/a,b"))
