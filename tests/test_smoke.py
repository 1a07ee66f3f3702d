from tests.conftest import Stack
from tests.helpers import follow


async def test_market_order_reaches_confirmed(stack: Stack) -> None:
    accepted = await stack.submit({"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 100})
    events = await follow(accepted["wsUrl"])
    assert [e["status"] for e in events] == ["pending", "routing", "building", "submitted", "confirmed"]
