"""Every order of a run and the log of what happened, fed by events and client-side outcomes."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from demo.describe import describe_event, short_id, swap_label
from demo.orders import OrderSpec
from demo.state import LOST, REJECTED, UNSUPPORTED, LogLine, OrderRow, apply_event

LOG_LINES = 8


@dataclass
class Board:
    """All rows plus the recent-events log; every change returns the line describing it."""

    rows: list[OrderRow]
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_LINES))

    @classmethod
    def from_specs(cls, specs: Sequence[OrderSpec]) -> Board:
        return cls([OrderRow(number, spec) for number, spec in enumerate(specs, start=1)])

    def apply(self, index: int, event: Mapping[str, Any]) -> str | None:
        row = self.rows[index]
        if not apply_event(row, event):
            return None
        return self.record(describe_event(row, event), row.status)

    def accept(self, index: int, order_id: str) -> str:
        row = self.rows[index]
        row.order_id = order_id
        return self.note(index, f"accepted as {short_id(order_id)}: {swap_label(row.spec)}", "")

    def reject(self, index: int, http_status: int, code: str, message: str) -> str:
        row = self.rows[index]
        row.error_code, row.error = code, message
        if row.spec.optional and http_status in (400, 404):
            row.status = UNSUPPORTED
            text = f"the server does not support {row.spec.kind} orders ({http_status} {code})"
            return self.note(index, f"{text}: {message} - skipped", UNSUPPORTED)
        row.status = REJECTED
        return self.note(index, f"rejected: {http_status} {code}: {message}", REJECTED)

    def lose(self, index: int, code: str, message: str) -> str:
        row = self.rows[index]
        row.status, row.error_code, row.error = LOST, code, message
        return self.note(index, f"lost: {message}", LOST)

    def time_out(self, index: int, timeout_s: float) -> str:
        row = self.rows[index]
        row.timed_out = True
        text = f"no terminal status after {timeout_s:g} s (last: {row.status})"
        return self.note(index, text, "")

    def note(self, index: int, text: str, status: str) -> str:
        return self.record(f"#{self.rows[index].number} {text}", status)

    def record(self, line: str, status: str) -> str:
        self.log.append(LogLine(line, status))
        return line
