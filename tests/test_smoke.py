"""A short end-to-end pass: what CI also runs against the machine's own servers."""

import pytest

from tests.conftest import Stack
from tests.helpers import follow

pytestmark = pytest.mark.smoke


async def test_market_order_reaches_confirmed(stack: Stack) -> None:
    accepted = await stack.submit(
        {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 100}
    )
    events = await follow(accepted["wsUrl"])
    statuses = [e["status"] for e in events]
    assert statuses == ["pending", "routing", "building", "submitted", "confirmed"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    detail = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    assert detail["status"] == "confirmed"
    assert detail["txHash"] == events[-1]["txHash"]


async def test_invalid_order_is_rejected(stack: Stack) -> None:
    response = await stack.http.post("/api/orders/execute", json={"tokenIn": "SOL"})
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_ERROR"


async def test_health(stack: Stack) -> None:
    body = (await stack.http.get("/health")).json()
    assert body["postgres"]["ok"] and body["redis"]["ok"]
