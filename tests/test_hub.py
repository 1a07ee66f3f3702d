"""The hub: one Redis subscription whose events it routes to the sockets following each order,
its periodic comparison with PostgreSQL, and its memory of recent orders.

What a socket does with what the hub routes to it is in test_stream.py; the end-to-end
behaviour is in test_ws.py and test_backpressure.py.
"""

import uuid
from typing import Any, cast

import orjson

from app.frames import Delivery, text_frame
from app.hub import EventHub, LastSeqs


class Recorder:
    """A socket as the hub sees it, recording what the hub routes to it."""

    def __init__(self, behind: bool = False) -> None:
        self.delivered: list[int] = []
        self.resyncs = 0
        self.behind = behind
        self.compared: list[int] = []

    def deliver(self, d: Delivery) -> None:
        self.delivered.append(d.seq)

    def resync(self) -> None:
        self.resyncs += 1

    def stalled_behind(self, stored: int) -> bool:
        self.compared.append(stored)
        return self.behind


def message(order_id: str, seq: int, status: str = "routing") -> bytes:
    """An event as it arrives on the events channel."""
    return orjson.dumps({"orderId": order_id, "seq": seq, "status": status, "attempt": 1})


async def no_reads(order_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    raise AssertionError("the hub's memory must not read PostgreSQL")


def hub(replay_orders: int = 4, last_seqs: LastSeqs = no_reads) -> EventHub:
    return EventHub(cast(Any, None), last_seqs, replay_orders=replay_orders)


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
    socket = Recorder()
    with h.subscribe("a", socket):
        h._dispatch(orjson.dumps([orjson.loads(message("a", 3)), orjson.loads(message("b", 1))]))
    assert socket.delivered == [3]
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
    moving, stalled = Recorder(behind=False), Recorder(behind=True)
    with h.subscribe(order_id, moving), h.subscribe(order_id, stalled):
        assert seqs(h.recent(order_id, 0)) == [1, 2]
        await h.check()
    assert h.recent(order_id, 0) is None
    assert moving.compared == stalled.compared == [3]
    assert (moving.resyncs, stalled.resyncs) == (0, 1)  # only a socket that stalled behind


def test_events_reach_only_their_orders_sockets_and_a_lost_feed_resyncs_them_all() -> None:
    h = hub()
    a1, a2, b = Recorder(), Recorder(), Recorder()
    with h.subscribe("a", a1), h.subscribe("a", a2), h.subscribe("b", b):
        h._dispatch(message("a", 1))
        h._dispatch(message("b", 1))
        h._dispatch(message("a", 2))
        h._broadcast_resync()  # what the subscription loop does after (re)subscribing
    h._dispatch(message("a", 3))  # after unsubscribing: nobody's
    assert a1.delivered == a2.delivered == [1, 2] and b.delivered == [1]
    assert a1.resyncs == a2.resyncs == b.resyncs == 1
