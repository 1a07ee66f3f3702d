"""What a worker needs to execute orders, built once in arq's on_startup."""

from dataclasses import dataclass

import asyncpg
from arq.connections import ArqRedis
from solders.keypair import Keypair

from shared.jobqueue import JobQueue
from shared.metrics import WorkerMetrics
from shared.settings import Settings
from shared.sim.cluster import Cluster
from shared.sim.market import Market
from worker.writes import Writes


@dataclass(slots=True)
class Engine:
    settings: Settings
    db: asyncpg.Pool
    redis: ArqRedis
    jobs: JobQueue
    market: Market
    cluster: Cluster
    keypair: Keypair
    writes: Writes
    metrics: WorkerMetrics
