"""Logging set-up shared by both processes (text for people, JSON for log pipelines)."""

import logging
import sys
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
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
