"""Test helpers: follow an order over its WebSocket until it finishes, with a deadline; listed
tokens and exact base units."""

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import websockets

from shared.market.tokens import Token, resolve_token

TERMINAL = {"confirmed", "failed", "cancelled", "expired"}


async def follow(ws_url: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Every event the socket sends until the server closes it after a terminal status."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s), websockets.connect(ws_url) as ws:
        async for message in ws:
            events.append(orjson.loads(message))
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
    return events


async def until_closed(ws: websockets.ClientConnection, timeout_s: float) -> list[Any]:
    """Every message (decoded) the socket receives until it is closed, within `timeout_s`."""
    messages: list[Any] = []
    async with asyncio.timeout(timeout_s):
        try:
            while True:
                messages.append(orjson.loads(await ws.recv()))
        except websockets.ConnectionClosed:
            pass
    return messages


async def wait_terminal(http: Any, order_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """The order once it is terminal, followed over its WebSocket (no polling)."""
    ws_base = str(http.base_url).replace("http://", "ws://").rstrip("/")
    await follow(f"{ws_base}/api/orders/execute?orderId={order_id}", timeout_s)
    response = await http.get(f"/api/orders/{order_id}")
    result: dict[str, Any] = response.json()
    return result


def listed(symbol: str) -> Token:
    """A listed token by its symbol."""
    token = resolve_token(symbol)
    assert token is not None, symbol
    return token


def base_units(token: Token, human: str) -> int:
    """A human amount of `token` in base units, exactly (it must have no finer digits)."""
    scaled = Decimal(human).scaleb(token.decimals)
    assert scaled == scaled.to_integral_value(), human
    return int(scaled)
