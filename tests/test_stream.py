"""How a socket's stream takes what the hub routes to it: written at once while its task is
idle, else handed to its task, never out of order and never twice.

These are the rules that keep a socket's stream gap-free and duplicate-free; the end-to-end
behaviour is in test_ws.py and test_backpressure.py, the frames the server writes in
test_wsserver.py.
"""

import uuid
from typing import Any, cast

import pytest
from websockets.frames import Frame, Opcode

from app.frames import Delivery, text_frame
from app.stream import FINISHED_CLOSE, OrderStream


def event(seq: int, status: str = "routing") -> Delivery:
    return Delivery.of({"orderId": "o", "seq": seq, "status": status, "attempt": 1})


class Socket:
    """A prepared-frame writer that can be told to refuse (its send buffer is full)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.full = False
        self.close: tuple[int, str] | None = None

    def write(self, frame: bytes, close: tuple[int, str] | None) -> bool:
        if self.full or self.close:
            return False
        self.frames.append(frame)
        self.close = close
        return True


def stream(sock: Socket | None = None, queue_size: int = 8, last: int = 0) -> OrderStream:
    """A stream with no socket task running: these tests play the task's part themselves."""
    s = OrderStream(
        cast(Any, None),  # the ASGI WebSocket: only the task uses it
        uuid.uuid4(),
        cast(Any, None),  # the hub: only the task uses it
        cast(Any, None),  # the pool: only the task uses it
        queue_size=queue_size,
        send_timeout_s=1.0,
        writer=None if sock is None else sock.write,
    )
    s.last = last
    return s


def idle(s: OrderStream) -> None:
    """What the task does when it waits with nothing to do."""
    s._wakeup.clear()
    s._idle = True


def handed_to_task(s: OrderStream) -> list[Delivery]:
    """What the task will take up (and whether it was woken for it)."""
    assert s._wakeup.is_set()
    return list(s._queue)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 100_000])
def test_text_frame_is_what_websockets_would_write(size: int) -> None:
    payload = b"x" * size
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def test_an_idle_socket_gets_each_next_event_at_once() -> None:
    sock = Socket()
    s = stream(sock, last=1)
    idle(s)
    for seq in (2, 3, 3, 2):  # the repeats are history and live overlapping
        s.deliver(event(seq))
    assert sock.frames == [event(2).frame, event(3).frame]
    assert s.last == 3 and list(s._queue) == [] and not s._wakeup.is_set()


def test_the_terminal_event_is_written_with_the_close_then_the_task_is_woken() -> None:
    sock = Socket()
    s = stream(sock, last=4)
    idle(s)
    s.deliver(event(5, "confirmed"))
    assert sock.frames == [event(5, "confirmed").frame] and sock.close == FINISHED_CLOSE
    assert s.finished and s.closed and handed_to_task(s) == []
    s.deliver(event(6))  # nothing after the end
    assert len(sock.frames) == 1 and list(s._queue) == []


@pytest.mark.parametrize("full", [False, True], ids=["taken", "refused"])
def test_a_replay_is_one_write_closed_after_its_terminal_event(full: bool) -> None:
    sock = Socket()
    s = stream(sock, last=1)
    replay = [event(2), event(3, "submitted"), event(4, "confirmed")]
    sock.full = full
    assert s.write_now(*replay) is not full
    if full:  # nothing written, nothing advanced: the task sends them one by one instead
        assert sock.frames == [] and (s.last, s.finished, s.closed) == (1, False, False)
    else:
        assert sock.frames == [b"".join(d.frame for d in replay)]
        assert sock.close == FINISHED_CLOSE
        assert (s.last, s.finished, s.closed) == (4, True, True)


def test_a_replay_short_of_the_end_leaves_the_socket_open() -> None:
    sock = Socket()
    s = stream(sock)
    assert s.write_now(event(1, "pending"), event(2))
    assert sock.frames == [event(1, "pending").frame + event(2).frame] and sock.close is None
    assert (s.last, s.finished, s.closed) == (2, False, False)


@pytest.mark.parametrize("case", ["gap", "full-buffer", "resync"])
def test_anything_but_the_next_event_goes_to_the_task_and_the_rest_waits_its_turn(
    case: str,
) -> None:
    sock = Socket()
    s = stream(sock, last=1)
    idle(s)
    sock.full = case == "full-buffer"
    if case == "resync":
        s.resync()
    else:
        s.deliver({"gap": event(3), "full-buffer": event(2)}[case])
    sock.full = False
    s.deliver(event(2))  # even a deliverable event now waits for the task
    assert sock.frames == [] and s.last == 1
    expected = {"gap": [event(3), event(2)], "full-buffer": [event(2), event(2)]}
    assert handed_to_task(s) == expected.get(case, [event(2)])
    assert s._resync is (case == "resync")


def test_a_busy_tasks_socket_is_not_written_from_the_hub() -> None:
    sock = Socket()
    s = stream(sock)  # not idle: the task is replaying or sending
    s.deliver(event(1))
    assert sock.frames == [] and handed_to_task(s) == [event(1)]


def test_without_prepared_frames_every_event_goes_to_the_task() -> None:
    s = stream(None, last=1)
    idle(s)
    s.deliver(event(2))
    assert handed_to_task(s) == [event(2)] and s.last == 1


def test_a_full_queue_marks_the_reader_too_slow() -> None:
    s = stream(None, queue_size=2)
    for seq in (1, 2, 3):
        s.deliver(event(seq))
    assert s._overflowed and handed_to_task(s) == [event(1), event(2)]


@pytest.mark.parametrize("progress", [False, True])
def test_only_a_socket_behind_for_a_whole_check_period_has_stalled(progress: bool) -> None:
    sock = Socket()
    s = stream(sock, last=2)
    idle(s)
    assert not s.stalled_behind(3)  # behind: perhaps seq 3 is merely in flight
    if progress:
        s.deliver(event(3))
        assert not s.stalled_behind(4)  # behind again, but it moved: still in flight
    else:
        assert s.stalled_behind(3)  # behind and still: the publish was lost
        assert not s.stalled_behind(3)  # told once; the next period starts afresh
    assert list(s._queue) == [] and not s._resync  # the hub decides to resync, not the check
