"""Configuration for both processes, read from the environment (and `.env`)."""

from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the engine; see `.env.example` for the documented list."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    host: str = "0.0.0.0"
    port: int = 3000
    # Who may tell us where a request came from. Comma-separated proxy addresses (IPs or
    # networks, `*` for any peer) whose X-Forwarded-For / X-Forwarded-Proto are believed; by
    # default nobody's, and the rate limit counts each TCP peer.
    forwarded_allow_ips: str = ""
    # The URL clients reach the API at (`https://api.example.com`), the base of every `wsUrl`;
    # by default each request's own Host (and scheme).
    public_url: str = Field("", pattern=r"^(|(https?|wss?)://[^/?#\s]+(/[^?#\s]*)?)$")
    # Web pages (origins, comma-separated, `*` for any) allowed to open the WebSocket, besides
    # the API's own origin; clients that send no Origin (not a browser) are always allowed.
    allowed_origins: str = ""

    worker_concurrency: int = Field(10, ge=1, le=10_000)
    max_attempts: int = Field(3, ge=1, le=20)
    backoff_base_ms: int = Field(500, ge=0)
    # Longest wait for one PostgreSQL statement / one Redis command before it counts as down.
    db_timeout_s: float = Field(2.0, gt=0)
    redis_timeout_s: float = Field(2.0, gt=0)
    job_timeout_s: int = Field(120, ge=5)
    # A running job renews a lease this long; a killed worker's order is picked up after it.
    job_lease_s: float = Field(10.0, gt=0)
    # SIGTERM: stop taking jobs and let running ones finish for this long before handing back.
    shutdown_grace_s: int = Field(20, ge=0)
    # Job runs an order may take (crashes included) before it is failed instead of retried.
    max_runs: int = Field(10, ge=1)
    sweep_interval_s: float = Field(5.0, gt=0)
    stale_order_s: float = Field(30.0, gt=0)

    # Admission: orders per second per client (0 = off) and queued jobs before 503 (0 = off).
    rate_limit_per_s: int = Field(100, ge=0)
    max_queue_depth: int = Field(10_000, ge=0)
    # WebSocket: events buffered per socket, and how long one send may block, before the
    # socket is closed with 4408 (reconnect with afterSeq).
    ws_buffer_events: int = Field(256, ge=1)
    ws_send_timeout_s: float = Field(10.0, gt=0)
    # How often the API compares its sockets with PostgreSQL, for an event whose publish was lost.
    ws_check_s: float = Field(5.0, gt=0)
    # Orders whose events the API keeps in memory, so a socket opened just after its POST
    # replays without reading PostgreSQL (0 = always read; about 3 KB per order, more for
    # an order that was retried).
    ws_replay_orders: int = Field(2048, ge=0)

    # Accounts and keys (README "Accounts and keys"): `open` serves callers without a key as
    # the built-in `public` account; `keys` needs a key on every /api request and WebSocket.
    auth_mode: Literal["open", "keys"] = "open"
    # How long a verified key (and an account's risk limits) is trusted without asking
    # PostgreSQL again: a revoked key stops working within this time.
    auth_cache_s: float = Field(10.0, ge=0)
    # Pre-trade risk limits per account (0 / empty = none); the `accounts` row overrides them.
    risk_max_notional_usd: Decimal = Field(Decimal(0), ge=0, allow_inf_nan=False)
    risk_max_open_orders: int = Field(0, ge=0)
    # Replaces RATE_LIMIT_PER_S (per client address) for callers with a key.
    risk_max_orders_per_s: int = Field(100, ge=0)
    # Comma-separated symbols or mints an order may buy or sell (empty = every token).
    risk_allowed_tokens: str = ""

    sim_latency_scale: float = Field(1.0, ge=0)
    sim_seed: int | None = None
    sim_drop_rate: float = Field(0.02, ge=0, le=1)
    sim_expiry_rate: float = Field(0.02, ge=0, le=1)
    sim_rpc_timeout_rate: float = Field(0.02, ge=0, le=1)
    sim_tick_ms: int = Field(1000, ge=0)  # 0 = the market does not drift (tests)
    engine_keypair: str | None = None
    data_dir: str = ".data"

    # Prometheus metrics: `GET /metrics` on the API, and on each worker an endpoint on the first
    # free port from WORKER_METRICS_PORT up (0 = any free port; the chosen one is logged).
    metrics_enabled: bool = True
    worker_metrics_port: int = Field(9101, ge=0, le=65535)
    # FastAPI's native OpenTelemetry (a span and metrics per request, sent to the providers an
    # OpenTelemetry SDK configures, e.g. under `opentelemetry-instrument`). The engine ships no
    # SDK; off, FastAPI skips looking for one on every request.
    otel_enabled: bool = False

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built once; tests build their own `Settings(...)`."""
    return Settings()
