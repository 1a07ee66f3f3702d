"""What one job run of an order tells the metrics and the logs as the order moves.

`RunObserver.moved` is called after each transition the run made: it times the stage that
ended (`order_stage_seconds`; a stage whose start was written by an earlier run is not timed,
its start time is not known here), counts terminal statuses (`orders_finished_total`) and keeps
the log context (`attempt`, `stage`) up to date for the lines that follow.
"""

import time
from datetime import datetime

from shared.logs import ATTEMPT, STAGE
from shared.metrics import STAGES, WorkerMetrics
from shared.models import TERMINAL_STATUSES


class RunObserver:
    __slots__ = ("_at", "_dex", "_metrics", "_started_wall", "_status")

    def __init__(
        self, metrics: WorkerMetrics, status: str, started: datetime, attempt: int, dex: str
    ) -> None:
        """`started`: when the order was accepted, or triggered (limit and sniper orders);
        `dex`: the venue an earlier attempt chose, if any."""
        self._metrics = metrics
        self._status = status
        self._dex = dex
        self._started_wall = started.timestamp()
        self._at: float | None = None  # monotonic time of this run's last transition
        ATTEMPT.set(attempt)
        STAGE.set(status)

    def moved(self, status: str, attempt: int, dex: str, code: str) -> None:
        """After a transition to `status`; `dex` is the venue it names (or ""), `code` the
        error code of a failure."""
        now = time.monotonic()
        self._dex = dex or self._dex
        stage = STAGES.get((self._status, status))
        if stage is not None:
            if self._status == "pending":  # written by the API (or the trigger): wall clock
                self._metrics.stage(stage, time.time() - self._started_wall)
            elif self._at is not None:
                self._metrics.stage(stage, now - self._at)
        if status in TERMINAL_STATUSES:
            self._metrics.finished(status, self._dex, code, time.time() - self._started_wall)
        self._status, self._at = status, now
        ATTEMPT.set(attempt)
        STAGE.set(status)
