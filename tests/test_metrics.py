"""Prometheus metrics of a real API and a real worker, read back through prometheus_client's own
parser after orders went through; probes; request ids followed through the logs."""

import asyncio
import io
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from shared.jobqueue import QueueWorker
from shared.logs import JsonFormatter
from shared.metrics import STAGES
from tests.conftest import Stack, StackFactory, free_port
from tests.helpers import follow, wait_terminal
from tests.procs import Proc, deployment
from tests.test_compose import DASHBOARD, promql_metrics

Samples = list[tuple[str, dict[str, str], float]]
MARKET = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}


def parse(text: str) -> Samples:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for n, have, value in samples
        if n == name and all(have.get(k) == v for k, v in labels.items())
    )


async def worker_metrics_url(worker: QueueWorker) -> str:
    """The worker's endpoint, once its `on_startup` has opened it."""
    async with asyncio.timeout(30):
        while "metrics_server" not in worker.ctx:  # noqa: ASYNC110 (arq offers no event)
            await asyncio.sleep(0.01)  # sleep-ok: polling the worker's own started flag
    return f"http://127.0.0.1:{worker.ctx['metrics_server'].port}/metrics"


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def scrape_until(
    url: str, ready: Callable[[Samples], bool], timeout_s: float = 10
) -> Samples:
    """Scrape until `ready` holds: a counter moves just after the event a client saw."""
    async with asyncio.timeout(timeout_s):
        while True:
            samples = await scrape(url)
            if ready(samples):
                return samples
            await asyncio.sleep(0.02)  # sleep-ok: the metric is only visible by scraping it


async def test_counters_and_histograms_move_by_exactly_the_orders_run(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    worker_url = await worker_metrics_url(stack._workers[0][0])
    api_url = f"{stack.base_url}/metrics"
    n = 6
    accepted = await asyncio.gather(*(stack.submit(MARKET) for _ in range(n)))
    runs = await asyncio.gather(*(follow(a["wsUrl"]) for a in accepted))
    assert all(events[-1]["status"] == "confirmed" for events in runs)
    dexes = [events[-1]["dex"] for events in runs]

    worker = await scrape_until(
        worker_url, lambda s: total(s, "orders_finished_total") >= n and
        total(s, "jobs_in_progress") == 0,
    )  # fmt: skip
    assert total(worker, "orders_finished_total") == n
    for dex in ("raydium", "meteora"):
        assert total(worker, "orders_finished_total", status="confirmed", dex=dex, code="") == (
            dexes.count(dex)
        )
    for stage in STAGES.values():
        assert total(worker, "order_stage_seconds_count", stage=stage) == n, stage
        assert total(worker, "order_stage_seconds_sum", stage=stage) > 0, stage
    assert total(worker, "order_latency_seconds_count") == n
    assert total(worker, "order_retries_total") == 0
    assert total(worker, "queue_depth") == 0
    # The market gauges come from the pools: both venues of every pair, and a gap between them.
    prices = [(lab["pair"], lab["dex"]) for name, lab, _ in worker if name == "venue_price"]
    assert ("SOL/USDC", "raydium") in prices and ("SOL/USDC", "meteora") in prices
    assert 0 < total(worker, "venue_gap_ratio", pair="SOL/USDC") < 0.2
    assert 100 < total(worker, "venue_price", pair="SOL/USDC", dex="raydium") < 1000

    api = await scrape_until(
        api_url, lambda s: total(s, "websocket_events_sent_total") >= 5 * n and
        total(s, "websocket_connections") == 0,
    )  # fmt: skip
    assert total(api, "orders_submitted_total", type="market") == n
    assert total(api, "orders_rejected_total") == 0
    # pending, routing, building, submitted, confirmed on each socket
    assert total(api, "websocket_events_sent_total") == 5 * n
    assert total(api, "websocket_slow_closes_total") == 0
    post = {"route": "/api/orders/execute", "method": "POST", "status": "200"}
    assert total(api, "http_request_duration_seconds_count", **post) == n
    sockets = {"route": "/api/orders/execute", "method": "WS", "status": "101"}
    assert total(api, "http_request_duration_seconds_count", **sockets) == n
    assert total(api, "dependency_up", dependency="postgresql") == 1
    assert total(api, "dependency_up", dependency="redis") == 1
    assert total(api, "dependency_errors_total") == 0


async def test_failures_and_retries_appear_under_their_codes(make_stack: StackFactory) -> None:
    stack = await make_stack(sim_expiry_rate=1.0, max_attempts=3, backoff_base_ms=10)
    worker_url = await worker_metrics_url(stack._workers[0][0])
    # One base unit of BONK buys nothing anywhere: failed at once, no retry.
    dust = await stack.submit({"tokenIn": "BONK", "tokenOut": "SOL", "amountIn": "0.00001"})
    expiring = await stack.submit(MARKET)  # every transaction expires: 2 retries, then failed
    for accepted in (dust, expiring):
        assert (await follow(accepted["wsUrl"]))[-1]["status"] == "failed"
    refused = await stack.http.post("/api/orders/execute", json={**MARKET, "amountIn": "-1"})
    assert refused.status_code == 400
    unknown = await stack.http.get(f"/api/orders/{'0' * 8}-0000-0000-0000-{'0' * 12}")
    assert unknown.status_code == 404

    worker = await scrape_until(worker_url, lambda s: total(s, "orders_finished_total") >= 2)
    failed = {"status": "failed"}
    assert total(worker, "orders_finished_total", **failed, code="INSUFFICIENT_LIQUIDITY") == 1
    assert total(worker, "orders_finished_total", **failed, code="BLOCKHASH_EXPIRED") == 1
    assert total(worker, "orders_finished_total", status="confirmed") == 0
    assert total(worker, "order_retries_total", code="BLOCKHASH_EXPIRED") == 2
    assert total(worker, "order_retries_total") == 2
    # Only the first attempt comes from `pending`; the retried attempts are timed from routing.
    assert total(worker, "order_stage_seconds_count", stage="accepted_to_routing") == 1
    assert total(worker, "order_stage_seconds_count", stage="routing_to_building") == 3

    api = await scrape(f"{stack.base_url}/metrics")
    assert total(api, "orders_rejected_total", code="VALIDATION_ERROR") == 1
    assert total(api, "orders_submitted_total") == 2
    # Route templates, never the id itself.
    get_one = {"route": "/api/orders/{order_id}", "method": "GET", "status": "404"}
    assert total(api, "http_request_duration_seconds_count", **get_one) == 1
    assert not [lab for n, lab, _ in api if "0000" in lab.get("route", "")]


async def test_probes_and_metrics_switch(make_stack: StackFactory) -> None:
    stack = await make_stack()
    live = await stack.http.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = await stack.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["postgres"]["ok"] and ready.json()["redis"]["ok"]

    off = await make_stack(metrics_enabled=False)
    response = await off.http.get("/metrics")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    await wait_terminal(off.http, (await off.submit(MARKET))["orderId"])  # off, not broken
    assert "engine" in off._workers[0][0].ctx and "metrics_server" not in off._workers[0][0].ctx


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """A real OpenTelemetry SDK as this process's tracer provider, as `opentelemetry-instrument`
    would configure it (once per process: OpenTelemetry allows one)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_fastapi_telemetry_reports_to_a_configured_sdk_only_when_enabled(
    make_stack: StackFactory, spans: InMemorySpanExporter
) -> None:
    for enabled in (False, True):
        spans.clear()
        stack = await make_stack(workers=0, otel_enabled=enabled)
        order_id = (await stack.submit(MARKET))["orderId"]
        assert (await stack.http.get(f"/api/orders/{order_id}")).status_code == 200
        names = [span.name for span in spans.get_finished_spans()]
        if enabled:
            assert "POST /api/orders/execute" in names, names
            assert "GET /api/orders/{order_id}" in names, names
        else:
            assert names == []


async def test_two_stacks_in_one_process_count_apart(make_stack: StackFactory) -> None:
    """Each API and worker owns its registry: nothing is shared through a global one."""
    first = await make_stack(workers=2)
    second = await make_stack()
    urls = {await worker_metrics_url(w) for w, _ in first._workers + second._workers}
    assert len(urls) == 3
    await wait_terminal(first.http, (await first.submit(MARKET))["orderId"])
    api = await scrape(f"{second.base_url}/metrics")
    assert total(api, "orders_submitted_total") == 0
    assert total(await scrape(f"{first.base_url}/metrics"), "orders_submitted_total") == 1


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log line of this process, as `LOG_FORMAT=json` writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


async def test_request_id_travels_from_the_request_to_the_workers_log_lines(
    make_stack: StackFactory, json_logs: io.StringIO
) -> None:
    stack = await make_stack(sim_expiry_rate=1.0, max_attempts=2)
    response = await stack.http.post(
        "/api/orders/execute", json=MARKET, headers={"X-Request-ID": "req-42.a:b"}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42.a:b"
    order_id = response.json()["orderId"]
    assert (await follow(response.json()["wsUrl"]))[-1]["status"] == "failed"

    worker_lines = [line for line in _lines(json_logs) if line["logger"] == "worker.pipeline"]
    about_order = [line for line in worker_lines if order_id in line["msg"]]
    # routing (attempt 1), retry, routing (attempt 2), failed
    assert len(about_order) >= 4, worker_lines
    for line in about_order:
        assert line["request_id"] == "req-42.a:b", line
        assert line["order_id"] == order_id, line
    routed = [line for line in about_order if "routing:" in line["msg"]]
    assert [(line["attempt"], line["stage"]) for line in routed] == [
        (1, "pending"),
        (2, "building"),
    ]
    last = about_order[-1]
    assert "failed after" in last["msg"] and (last["attempt"], last["stage"]) == (2, "failed")


async def test_request_ids_are_generated_when_absent_or_unsafe(stack: Stack) -> None:
    for sent in (None, "has space", "x" * 129, "semi;colon"):
        headers = {} if sent is None else {"X-Request-ID": sent}
        response = await stack.http.get("/livez", headers=headers)
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), sent
    kept = await stack.http.get("/livez", headers={"X-Request-ID": "x" * 128})
    assert kept.headers["x-request-id"] == "x" * 128
    refused = await stack.http.post("/api/orders/execute", content=b"{", headers={
        "X-Request-ID": "bad-body", "Content-Type": "application/json"})  # fmt: skip
    assert refused.status_code == 400
    assert refused.headers["x-request-id"] == "bad-body"


def exposed_names(text: str) -> set[str]:
    """Every series name a scrape offers, whether or not a labelled metric has samples yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
        names |= {sample.name for sample in family.samples}
    return names


async def test_every_dashboard_query_reads_a_metric_the_engine_exposes(stack: Stack) -> None:
    await wait_terminal(stack.http, (await stack.submit(MARKET))["orderId"])
    worker_url = await worker_metrics_url(stack._workers[0][0])
    async with httpx.AsyncClient(timeout=10) as client:
        api_text = (await client.get(f"{stack.base_url}/metrics")).text
        worker_text = (await client.get(worker_url)).text
    exposed = exposed_names(api_text) | exposed_names(worker_text)
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            missing = promql_metrics(target["expr"]) - exposed
            assert not missing, (panel["title"], missing)
    # and the list, by its names
    for name in (
        "orders_submitted_total", "orders_rejected_total", "orders_finished_total",
        "order_stage_seconds_bucket", "order_latency_seconds_bucket", "order_retries_total",
        "jobs_in_progress", "queue_depth", "websocket_connections", "websocket_events_sent_total",
        "websocket_slow_closes_total", "http_request_duration_seconds_bucket",
        "dependency_errors_total", "dependency_up", "venue_price", "venue_gap_ratio",
    ):  # fmt: skip
        assert name in exposed, name


async def test_real_processes_share_a_host_and_one_request_id_runs_through_their_logs() -> None:
    """`python -m app` and two `python -m worker` with LOG_FORMAT=json: the workers take
    consecutive metrics ports from the base, and the request's id is on the worker's lines."""
    base = free_port()
    async with deployment(LOG_FORMAT="json", WORKER_METRICS_PORT=str(base)) as d:
        api = await d.start_api()
        workers = [await d.start_worker(), await d.start_worker()]
        ports = [_logged_metrics_port(w) for w in workers]
        assert ports[0] == base and ports[1] > base, ports
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            response = await http.post(
                "/api/orders/execute", json=MARKET, headers={"X-Request-ID": "e2e-7f3a"}
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == "e2e-7f3a"
            order_id = response.json()["orderId"]
            assert (await wait_terminal(http, order_id))["status"] == "confirmed"
        finished = [
            total(await scrape(f"http://127.0.0.1:{port}/metrics"), "orders_finished_total")
            for port in ports
        ]
        assert sorted(finished) == [0, 1]  # one worker ran it, and only it counted it
        ran = workers[finished.index(1)]
        lines = [orjson.loads(ln) for ln in ran.log(lines=10_000).splitlines() if ln[:1] == "{"]
        about = [line for line in lines if line.get("order_id") == order_id]
        assert about, ran.log()
        assert {line["request_id"] for line in about} == {"e2e-7f3a"}
        assert any("confirmed on" in line["msg"] and line["stage"] == "confirmed" for line in about)


def _logged_metrics_port(worker: Proc) -> int:
    found = re.search(r"worker metrics on http://[^:]+:(\d+)/metrics", worker.log(lines=10_000))
    assert found, worker.log()
    return int(found.group(1))


async def test_an_outage_shows_in_readyz_and_the_dependency_metrics() -> None:
    async with deployment() as d:
        api = await d.start_api()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            await asyncio.to_thread(d.servers.pg.kill)
            refused = await http.post("/api/orders/execute", json=MARKET)
            assert refused.status_code == 503, refused.text  # the breaker opens
            ready = await http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert not ready.json()["postgres"]["ok"] and ready.json()["redis"]["ok"]
            assert (await http.get("/livez")).status_code == 200  # alive: do not restart it
            down = await scrape(f"{api.base_url}/metrics")
            assert total(down, "dependency_up", dependency="postgresql") == 0
            assert total(down, "dependency_up", dependency="redis") == 1
            assert total(down, "dependency_errors_total", dependency="postgresql") >= 1
            # 503 either way: refused before the statement was sent, or after (outcome unknown)
            codes = {lab["code"] for n, lab, v in down if n == "orders_rejected_total" and v}
            assert total(down, "orders_rejected_total") == 1
            assert codes <= {"SERVICE_UNAVAILABLE", "ORDER_OUTCOME_UNKNOWN"}, codes

            await asyncio.to_thread(d.servers.restart_postgres)
            async with asyncio.timeout(30):
                while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # sleep-ok: waiting for the breaker's probe
            up = await scrape(f"{api.base_url}/metrics")
            assert total(up, "dependency_up", dependency="postgresql") == 1


def test_a_metrics_port_another_worker_holds_is_refused_at_once() -> None:
    """Workers starting together each get their own port: the second bind of a port fails
    at once (the first worker may not even be listening yet), and it moves on."""
    from worker.exporter import _listening_socket

    first = _listening_socket("127.0.0.1", 0)
    assert first is not None
    try:
        taken = int(first.getsockname()[1])
        assert _listening_socket("127.0.0.1", taken) is None
    finally:
        first.close()
