"""Configuration for both processes, read from the environment (and `.env`)."""

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

    worker_concurrency: int = Field(10, ge=1, le=10_000)
    max_attempts: int = Field(3, ge=1, le=20)
    backoff_base_ms: int = Field(500, ge=0)
    job_timeout_s: int = Field(120, ge=5)
    sweep_interval_s: float = Field(5.0, gt=0)
    stale_order_s: float = Field(30.0, gt=0)

    sim_latency_scale: float = Field(1.0, ge=0)
    sim_seed: int | None = None
    sim_drop_rate: float = Field(0.02, ge=0, le=1)
    sim_expiry_rate: float = Field(0.02, ge=0, le=1)
    sim_rpc_timeout_rate: float = Field(0.02, ge=0, le=1)
    sim_tick_ms: int = Field(1000, ge=0)  # 0 = the market does not drift (tests)
    engine_keypair: str | None = None
    data_dir: str = ".data"

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built once; tests build their own `Settings(...)`."""
    return Settings()
