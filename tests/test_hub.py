"""The hub's hand-off between itself and a socket's task, the frames it writes, and its memory of
recent orders.

These are the rules that keep a socket's stream gap-free and duplicate-free while two writers
(the hub, for an idle socket, and the socket's own task) take turns; the end-to-end behaviour
is in test_ws.py and test_backpressure.py.
"""

import uuid
from typing import Any, cast

import orjson
import pytest
from websockets.frames import Frame, Opcode

from app.hub import FINISHED_CLOSE, RESYNC, WAKE, Delivery, EventHub, LastSeqs, Subscription
from app.wsserver import text_frame


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


def queued(sub: Subscription) -> list[Delivery]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 100_000])
def test_text_frame_is_what_websockets_would_write(size: int) -> None:
    payload = b"x" * size
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def test_an_idle_socket_gets_each_next_event_from_the_hub() -> None:
    sock = Socket()
    sub = Subscription("o", 8, sock.write)
    sub.last = 1
    sub.lend()
    for seq in (2, 3, 3, 2):  # the repeats are history and live overlapping
        sub.deliver(event(seq))
    assert sock.frames == [event(2).frame, event(3).frame]
    assert sub.last == 3 and queued(sub) == []


def test_the_terminal_event_is_written_with_the_close_then_the_task_is_woken() -> None:
    sock = Socket()
    sub = Subscription("o", 8, sock.write)
    sub.last = 4
    sub.lend()
    sub.deliver(event(5, "confirmed"))
    assert sock.frames == [event(5, "confirmed").frame] and sock.close == FINISHED_CLOSE
    assert sub.finished and sub.closed and queued(sub) == [WAKE]
    sub.deliver(event(6))  # nothing after the end, and the hub has let go
    assert len(sock.frames) == 1


@pytest.mark.parametrize("full", [False, True], ids=["taken", "refused"])
def test_a_replay_is_one_write_closed_after_its_terminal_event(full: bool) -> None:
    sock = Socket()
    sub = Subscription("o", 8, sock.write)
    sub.last = 1
    replay = [event(2), event(3, "submitted"), event(4, "confirmed")]
    sock.full = full
    assert sub.write_now(*replay) is not full
    if full:  # nothing written, nothing advanced: the task sends them one by one instead
        assert sock.frames == [] and (sub.last, sub.finished, sub.closed) == (1, False, False)
    else:
        assert sock.frames == [b"".join(d.frame for d in replay)]
        assert sock.close == FINISHED_CLOSE
        assert (sub.last, sub.finished, sub.closed) == (4, True, True)


def test_a_replay_short_of_the_end_leaves_the_socket_open() -> None:
    sock = Socket()
    sub = Subscription("o", 8, sock.write)
    assert sub.write_now(event(1, "pending"), event(2))
    assert sock.frames == [event(1, "pending").frame + event(2).frame] and sock.close is None
    assert (sub.last, sub.finished, sub.closed) == (2, False, False)


@pytest.mark.parametrize(
    "case",
    ["gap", "full-buffer", "resync"],
)
def test_anything_but_the_next_event_goes_to_the_task_and_the_hub_lets_go(
    case: str,
) -> None:
    sock = Socket()
    sub = Subscription("o", 8, sock.write)
    sub.last = 1
    sub.lend()
    first: Any = {"gap": event(3), "full-buffer": event(2), "resync": RESYNC}[case]
    sock.full = case == "full-buffer"
    sub.deliver(first)
    sock.full = False
    sub.deliver(event(2))  # even a deliverable event now waits its turn behind the first
    assert sock.frames == []
    assert queued(sub) == [first, event(2)]
    assert sub.last == 1


def test_a_reclaimed_socket_is_not_written_by_the_hub() -> None:
    sock = Socket()
    sub = Subscription("o", 8, sock.write)
    sub.lend()
    sub.reclaim()
    sub.deliver(event(1))
    assert sock.frames == [] and queued(sub) == [event(1)]


def test_a_full_queue_marks_the_reader_too_slow() -> None:
    sub = Subscription("o", 2)
    for seq in (1, 2, 3):
        sub.deliver(event(seq))
    assert sub.overflowed


@pytest.mark.parametrize("progress", [False, True])
def test_the_check_resyncs_only_a_socket_behind_for_a_whole_period(progress: bool) -> None:
    sock = Socket()
    sub = Subscription("o", 8, sock.write)
    sub.last = 2
    sub.lend()
    sub.compare(3)  # behind: perhaps seq 3 is merely in flight
    assert queued(sub) == []
    if progress:
        sub.deliver(event(3))
        sub.compare(4)  # behind again, but it moved: still in flight
        assert queued(sub) == []
    else:
        sub.compare(3)  # behind and still: the publish was lost
        assert queued(sub) == [RESYNC]


# ---------------------------------------------------------------------------------------------
# the hub's memory of recent orders (replay without a PostgreSQL read)


def message(order_id: str, seq: int, status: str = "routing") -> bytes:
    """An event as it arrives on the events channel."""
    return orjson.dumps({"orderId": order_id, "seq": seq, "status": status, "attempt": 1})


async def no_reads(order_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    raise AssertionError("the hub's memory must not read PostgreSQL")


def hub(replay_orders: int = 4, last_seqs: LastSeqs = no_reads) -> EventHub:
    return EventHub(cast(Any, None), 8, last_seqs, replay_orders=replay_orders)


def seqs(deliveries: list[Delivery] | None) -> list[int] | None:
    return None if deliveries is None else [d.seq for d in deliveries]


def test_an_order_seen_from_its_first_event_replays_from_memory() -> None:
    h = hub()
    h.remember({"orderId": "a", "seq": 1, "status": "pending", "attempt": 0})  # its own POST
    for seq in (1, 2, 3):  # the channel brings `pending` back too
        h._dispatch(message("a", seq))  # what the subscription loop does with each message
    assert seqs(h.recent("a", 0)) == [1, 2, 3]
    assert seqs(h.recent("a", 2)) == [3]
    assert seqs(h.recent("a", 3)) == []  # nothing yet, more to come: go live
    assert h.recent("a", 4) is None  # past what the hub saw: PostgreSQL decides
    frames = [d.frame for d in h.recent("a", 0) or []]
    assert frames[1:] == [text_frame(message("a", seq)) for seq in (2, 3)]


def test_a_message_of_several_events_is_taken_event_by_event() -> None:
    """A worker's batch arrives as one JSON array; anything in it that is not an event is
    skipped, and the events around it still count."""
    h = hub()
    batch = [orjson.loads(message("a", seq)) for seq in (1, 2)]
    h._dispatch(orjson.dumps([batch[0], 7, batch[1]]))
    with h.subscribe("a", Socket().write) as sub:
        sub.last = 2
        sub.lend()
        h._dispatch(orjson.dumps([orjson.loads(message("a", 3)), orjson.loads(message("b", 1))]))
        assert sub.last == 3
    assert [d.frame for d in h.recent("a", 0) or []] == [
        text_frame(message("a", seq)) for seq in (1, 2, 3)
    ]
    assert seqs(h.recent("b", 0)) == [1]


def test_an_order_joined_midway_or_with_a_gap_is_left_to_postgresql() -> None:
    h = hub()
    h._dispatch(message("late", 2))  # the hub was not there for seq 1
    h._dispatch(message("late", 3))
    assert h.recent("late", 0) is None
    for seq in (1, 2, 4):  # seq 3 was lost on the way
        h._dispatch(message("gap", seq))
    assert h.recent("gap", 0) is None and h.recent("gap", 2) is None


def test_after_the_terminal_event_memory_defers_to_postgresql_for_the_end() -> None:
    h = hub()
    h._dispatch(message("done", 1, "pending"))
    h._dispatch(message("done", 2, "failed"))
    recent = h.recent("done", 0)
    assert seqs(recent) == [1, 2] and recent is not None and recent[-1].terminal
    assert h.recent("done", 2) is None  # finished: the route asks PostgreSQL, which says so


def test_memory_keeps_only_the_latest_orders() -> None:
    h = hub(replay_orders=2)
    for order_id in ("a", "b", "c"):
        h._dispatch(message(order_id, 1, "pending"))
    assert h.recent("a", 0) is None
    assert seqs(h.recent("b", 0)) == [1] and seqs(h.recent("c", 0)) == [1]
    off = hub(replay_orders=0)
    off._dispatch(message("a", 1, "pending"))
    assert off.recent("a", 0) is None


async def test_an_order_the_check_finds_behind_postgresql_is_left_to_postgresql() -> None:
    order_id = str(uuid.uuid4())

    async def stored(order_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        return {uuid.UUID(order_id): 3}  # seq 3 was committed; its publish never came

    h = hub(last_seqs=stored)
    for seq in (1, 2):
        h._dispatch(message(order_id, seq))
    with h.subscribe(order_id):
        assert seqs(h.recent(order_id, 0)) == [1, 2]
        await h.check()
    assert h.recent(order_id, 0) is None
