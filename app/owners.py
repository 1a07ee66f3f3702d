"""Which account owns each order this API process accepted recently.

A WebSocket that follows an order must not show another account's order; for an order this
process has just accepted (the usual case: POST, then open its `wsUrl`) the owner is known
here, so the check costs no PostgreSQL read.
"""

import uuid


class RecentOwners:
    def __init__(self, capacity: int) -> None:
        self._capacity = max(capacity, 1)
        self._owners: dict[uuid.UUID, str] = {}

    def remember(self, order_id: uuid.UUID, account: str) -> None:
        if len(self._owners) >= self._capacity:  # forget the oldest (dicts keep insertion order)
            del self._owners[next(iter(self._owners))]
        self._owners[order_id] = account

    def get(self, order_id: uuid.UUID) -> str | None:
        return self._owners.get(order_id)
