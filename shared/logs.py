"""Logging set-up shared by both processes (text for people, JSON for log pipelines).

Lines about an order carry its `order_id`, `attempt`, `stage` and the `request_id` of the request
that created it, as fields in JSON. They come from context variables, set where the order is
known (the request middleware, the worker's job), so a log call names none of them itself; each
request and each job runs in a task of its own, so the values never leak between orders.
"""

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
ORDER_ID: ContextVar[str | None] = ContextVar("order_id", default=None)
ATTEMPT: ContextVar[int | None] = ContextVar("attempt", default=None)
STAGE: ContextVar[str | None] = ContextVar("stage", default=None)
_FIELDS = (
    ("request_id", REQUEST_ID),
    ("order_id", ORDER_ID),
    ("attempt", ATTEMPT),
    ("stage", STAGE),
)

# A request id goes into log lines and a Redis job: short, and nothing a log parser or a
# terminal could take for structure (no spaces, quotes, newlines or control characters).
MAX_REQUEST_ID = 128
_SAFE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID}}}")


def request_id_from(header: str | None) -> str:
    """The client's `X-Request-ID` when it is short and plain, else a new random one."""
    if header is not None and _SAFE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in _FIELDS:
            value = var.get()
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: str, process: str) -> None:
    """Log to stderr, one line per record, tagged with the process name in text mode."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-5s {process} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # arq logs two lines per job (start, end) that repeat what the pipeline logs with more
    # detail; at hundreds of orders a second they cost real CPU. Its warnings still show.
    if root.level >= logging.INFO:
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
