"""A real Prometheus server scrapes a running API and worker, and answers a query about them.

Needs Debian's `prometheus` package (`.ci/run` installs it); skipped, saying so, without it.
"""

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import StackFactory, free_port
from tests.helpers import follow
from tests.test_metrics import MARKET, worker_metrics_url

PROMETHEUS = Path("/usr/bin/prometheus")

pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason="no /usr/bin/prometheus: `apt-get install -y prometheus` to run this test",
)


class Prometheus:
    """A Prometheus server on loopback with its own data directory."""

    def __init__(self, root: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        (root / "data").mkdir()
        self._argv = [
            str(PROMETHEUS),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self._log = root / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                self._argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    async def query(self, client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
        response = await client.get(f"{self.url}/api/v1/query", params={"query": promql})
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-3000:]


async def test_prometheus_scrapes_the_stack_and_counts_the_orders(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack()
    worker_url = await worker_metrics_url(stack._workers[0][0])
    n = 4
    accepted = await asyncio.gather(*(stack.submit(MARKET) for _ in range(n)))
    finals = await asyncio.gather(*(follow(a["wsUrl"]) for a in accepted))
    assert [events[-1]["status"] for events in finals] == ["confirmed"] * n

    api_target = stack.base_url.removeprefix("http://")
    worker_target = worker_url.removeprefix("http://").removesuffix("/metrics")
    (tmp_path / "prometheus").mkdir()
    server = Prometheus(tmp_path / "prometheus", {"api": api_target, "worker": worker_target})
    server.start()
    finished = 'sum(orders_finished_total{status="confirmed"})'
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            try:
                async with asyncio.timeout(60):
                    while not await _scraped_both(server, client):  # noqa: ASYNC110
                        await asyncio.sleep(0.2)  # sleep-ok: waiting for its first scrapes
            except TimeoutError:
                pytest.fail(f"Prometheus never scraped both targets:\n{server.log()}")
            assert [float(r["value"][1]) for r in await server.query(client, finished)] == [n]
            submitted = await server.query(client, "sum(orders_submitted_total)")
            assert [float(r["value"][1]) for r in submitted] == [n]
            up = await server.query(client, "up")
            assert {r["metric"]["job"]: r["value"][1] for r in up} == {"api": "1", "worker": "1"}
    finally:
        server.stop()


async def _scraped_both(server: Prometheus, client: httpx.AsyncClient) -> bool:
    try:
        up = await server.query(client, "up == 1")
    except httpx.TransportError:
        return False  # not listening yet
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 503:
            return False  # listening, still loading its storage ("not ready")
        raise
    return {r["metric"]["job"] for r in up} == {"api", "worker"}
