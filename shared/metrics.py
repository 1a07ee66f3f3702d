"""Prometheus metrics of the API and of the worker, each process with its own registry.

Every process (and every API and worker a test starts in one process) builds its own
`ApiMetrics` or `WorkerMetrics` in its lifespan / `on_startup`; nothing is registered in
`prometheus_client`'s global registry. Labels are bounded: templated routes, status names,
error codes, venues and pairs, never an id or anything a client typed.

With `METRICS_ENABLED=false` the objects still exist but every recording method returns at
once, and nothing is served.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
M = TypeVar("M", Counter, Histogram)

# Stage names: the time from the first status to the second, within one attempt.
STAGES = {
    ("pending", "routing"): "accepted_to_routing",
    ("routing", "building"): "routing_to_building",
    ("building", "submitted"): "building_to_submitted",
    ("submitted", "confirmed"): "submitted_to_confirmed",
}
# The simulated cluster answers in tens of milliseconds to seconds; the last buckets catch
# orders that waited for a retry or for a limit price.
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """A registry of one process's metrics, rendered in Prometheus' text format."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=False)
        # `*_created` series would double every scrape for a timestamp nobody charts. The switch
        # is the library's own, process-wide, and only ever set one way here.
        disable_created_metrics()  # type: ignore[no-untyped-call]

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Children(Generic[M]):
    """A labelled metric's children by label values, looked up in a plain dict: `labels()`
    validates and locks on every call (~1 µs), and the hot path asks for the same few label
    sets every time. Label sets stay bounded, so the dict does too."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class BreakerView(Protocol):
    """What `DependencyCollector` reads from a dependency (`app.outages.Dependency`)."""

    name: str
    errors: int

    @property
    def up(self) -> bool: ...


class DependencyCollector(Collector):
    """`dependency_up` and `dependency_errors_total`, read from the API's breakers at scrape
    time (`app.outages.Dependency`: `name`, `up`, `errors`), so a request pays nothing."""

    def __init__(self, dependencies: Callable[[], Iterable[BreakerView]]) -> None:
        self._dependencies = dependencies

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily(
            "dependency_up", "1 while the dependency answers, 0 while its breaker is open",
            labels=["dependency"],
        )  # fmt: skip
        errors = CounterMetricFamily(
            "dependency_errors", "Calls that failed because the dependency was unreachable",
            labels=["dependency"],
        )  # fmt: skip
        for dep in self._dependencies():
            name = dep.name.lower()
            up.add_metric([name], 1.0 if dep.up else 0.0)
            errors.add_metric([name], float(dep.errors))
        yield up
        yield errors


class ApiMetrics(Metrics):
    """The API's metrics: orders in, HTTP latency, WebSockets, dependencies."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(enabled)
        r = self.registry
        self.orders_submitted = Counter(
            "orders_submitted", "Orders accepted (HTTP or WebSocket)", ["type"], registry=r
        )
        self.orders_rejected = Counter(
            "orders_rejected", "Order submissions refused, by error code", ["code"], registry=r
        )
        self.orders_finished = Counter(
            "orders_finished", "Orders that reached a terminal status here (cancelled)",
            ["status", "dex", "code"], registry=r,
        )  # fmt: skip
        self.http_duration = Histogram(
            "http_request_duration_seconds", "HTTP requests and WebSocket sessions, by route",
            ["route", "method", "status"], buckets=_HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        self.ws_connections = Gauge(
            "websocket_connections", "WebSockets following an order now", registry=r
        )
        self.ws_events_sent = Counter(
            "websocket_events_sent", "Order events sent on WebSockets (counted at close)",
            registry=r,
        )  # fmt: skip
        self.ws_slow_closes = Counter(
            "websocket_slow_closes", "WebSockets closed 4408 because the reader fell behind",
            registry=r,
        )  # fmt: skip
        self._submitted = Children(self.orders_submitted)
        self._http = Children(self.http_duration)

    def watch(
        self, subscribers: Callable[[], int], dependencies: Callable[[], Iterable[BreakerView]]
    ) -> None:
        """Read the hub's socket count and the breakers' state at each scrape."""
        self.ws_connections.set_function(lambda: float(subscribers()))
        self.registry.register(DependencyCollector(dependencies))

    def submitted(self, order_type: str) -> None:
        if self.enabled:
            self._submitted(order_type).inc()

    def rejected(self, code: str) -> None:
        if self.enabled:
            self.orders_rejected.labels(code).inc()

    def cancelled(self) -> None:
        if self.enabled:
            self.orders_finished.labels("cancelled", "", "").inc()

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        if self.enabled:
            self._http(route, method, str(status)).observe(seconds)

    def socket_closed(self, events_sent: int, too_slow: bool) -> None:
        if self.enabled:
            self.ws_events_sent.inc(events_sent)
            if too_slow:
                self.ws_slow_closes.inc()


class WorkerMetrics(Metrics):
    """A worker's metrics: how orders finish, how long each stage takes, jobs, the market."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(enabled)
        r = self.registry
        self.orders_finished = Counter(
            "orders_finished", "Orders that reached a terminal status ('code' empty if confirmed)",
            ["status", "dex", "code"], registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "order_stage_seconds", "Time between two statuses of one attempt",
            ["stage"], buckets=_STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency_seconds = Histogram(
            "order_latency_seconds", "From acceptance (or trigger) to a terminal status",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "order_retries", "Attempts that failed and will be retried, by code", ["code"],
            registry=r,
        )  # fmt: skip
        self.jobs_in_progress = Gauge(
            "jobs_in_progress", "Order jobs this worker is running", registry=r
        )
        self.queue_depth = Gauge(
            "queue_depth", "Jobs in the queue (running ones included), read at scrape",
            registry=r,
        )  # fmt: skip
        self.venue_price = Gauge(
            "venue_price", "Each venue's best price for a reference-size swap (quote per base)",
            ["pair", "dex"], registry=r,
        )  # fmt: skip
        self.venue_gap_ratio = Gauge(
            "venue_gap_ratio", "How much more the best venue pays than the other (0.03 = 3 %)",
            ["pair"], registry=r,
        )  # fmt: skip
        self._stage = Children(self.stage_seconds)
        self._finished = Children(self.orders_finished)

    def stage(self, stage: str, seconds: float) -> None:
        if self.enabled:
            self._stage(stage).observe(max(seconds, 0.0))

    def finished(self, status: str, dex: str, code: str, latency_s: float | None) -> None:
        if self.enabled:
            self._finished(status, dex, code).inc()
            if latency_s is not None:
                self.latency_seconds.observe(max(latency_s, 0.0))

    def expired(self, count: int) -> None:
        if self.enabled and count:
            self.orders_finished.labels("expired", "", "").inc(count)

    def retry(self, code: str) -> None:
        if self.enabled:
            self.retries.labels(code).inc()

    def job_started(self) -> None:
        if self.enabled:
            self.jobs_in_progress.inc()

    def job_ended(self) -> None:
        if self.enabled:
            self.jobs_in_progress.dec()
