"""An order event as the WebSocket carries it: framed once (RFC 6455) for every socket."""

import struct
from dataclasses import dataclass
from typing import Any

import orjson

from shared.models import TERMINAL_STATUSES

_TEXT_FIN = 0x81  # FIN + opcode 1 (text); server frames are never masked


def text_frame(payload: bytes) -> bytes:
    """One complete, unmasked WebSocket text frame (RFC 6455 §5.2) holding UTF-8 `payload`."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", _TEXT_FIN, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", _TEXT_FIN, 126, n)
    else:
        head = struct.pack("!BBQ", _TEXT_FIN, 127, n)
    return head + payload


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event, framed once for every socket that receives it."""

    frame: bytes  # the whole WebSocket text frame: `header_len` bytes, then the JSON
    seq: int
    terminal: bool
    header_len: int

    @classmethod
    def of(cls, event: dict[str, Any], raw: bytes | None = None) -> "Delivery":
        raw = orjson.dumps(event) if raw is None else raw
        frame = text_frame(raw)
        terminal = event["status"] in TERMINAL_STATUSES
        return cls(frame, int(event["seq"]), terminal, len(frame) - len(raw))

    @property
    def text(self) -> str:
        """The event's JSON, for a server without prepared frames (or a full send buffer)."""
        return self.frame[self.header_len :].decode()
