"""What a request may claim about where it came from, over real HTTP and WebSocket:
forwarded headers count only from configured proxies (`FORWARDED_ALLOW_IPS`), `wsUrl` comes
from `PUBLIC_URL` or the request's own Host, and the WebSocket checks `Origin`."""

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest
import websockets
from websockets.typing import Origin

from shared.settings import Settings
from tests.conftest import Stack, StackFactory
from tests.helpers import until_closed

EXECUTE = "/api/orders/execute"
ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.5"}
EVIL = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


def _host(stack: Stack) -> str:
    return stack.base_url.removeprefix("http://")


async def _posts(stack: Stack, forwarded_for: list[str]) -> list[int]:
    """The status of one POST per `X-Forwarded-For` value, sent at once."""
    responses = await asyncio.gather(
        *(
            stack.http.post(EXECUTE, json=ORDER, headers={"X-Forwarded-For": ip})
            for ip in forwarded_for
        )
    )
    return [r.status_code for r in responses]


async def _submit_over_socket(stack: Stack, origin: str | None) -> dict[str, Any]:
    """Open the submit socket from `origin` and send an order: the first answer, or the close
    (`{"closed": code, "reason": ...}`) when the socket was refused."""
    async with websockets.connect(
        f"{stack.ws_base}{EXECUTE}", origin=None if origin is None else Origin(origin)
    ) as ws:
        try:
            await ws.send(orjson.dumps(ORDER).decode())
            async with asyncio.timeout(10):
                answer: dict[str, Any] = orjson.loads(await ws.recv())
        except websockets.ConnectionClosed:
            return {"closed": ws.close_code, "reason": ws.close_reason}
        return answer


async def test_forwarded_host_and_proto_never_reach_ws_url(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0)
    response = await stack.http.post(EXECUTE, json=ORDER, headers=EVIL)
    assert response.status_code == 200, response.text
    ws_url = response.json()["wsUrl"]
    assert ws_url.startswith(f"ws://{_host(stack)}{EXECUTE}?orderId="), ws_url
    async with websockets.connect(f"{stack.ws_base}{EXECUTE}", additional_headers=EVIL) as ws:
        await ws.send(orjson.dumps(ORDER).decode())
        accepted = orjson.loads(await ws.recv())
    assert accepted["wsUrl"].startswith(f"ws://{_host(stack)}{EXECUTE}?orderId="), accepted


async def test_a_host_header_that_is_no_host_is_not_copied(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0)
    response = await stack.http.post(EXECUTE, json=ORDER, headers={"Host": "evil.example/x?y="})
    assert response.status_code == 200, response.text
    assert response.json()["wsUrl"].startswith(f"ws://{_host(stack)}{EXECUTE}?orderId=")


async def test_public_url_is_the_base_of_ws_url(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0, public_url="https://api.example.com/engine/")
    response = await stack.http.post(EXECUTE, json=ORDER, headers=EVIL)
    order_id = response.json()["orderId"]
    assert response.json()["wsUrl"] == f"wss://api.example.com/engine{EXECUTE}?orderId={order_id}"


async def test_rotating_forwarded_for_counts_against_the_real_peer(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0, rate_limit_per_s=2)
    statuses = await _posts(stack, [f"203.0.113.{i}" for i in range(8)])
    # Two windows at most (the burst may straddle a second): at most 4 pass.
    assert statuses.count(200) <= 4 and 429 in statuses, statuses
    assert await db.fetchval("SELECT count(*) FROM orders") == statuses.count(200)


async def test_a_trusted_proxy_is_believed(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0, rate_limit_per_s=2, forwarded_allow_ips="127.0.0.1")
    # Eight clients behind the proxy, one order each: nobody is over the limit.
    assert await _posts(stack, [f"203.0.113.{i}" for i in range(8)]) == [200] * 8
    # One client behind the proxy, eight orders: over the limit.
    assert 429 in await _posts(stack, ["198.51.100.7"] * 8)
    response = await stack.http.post(EXECUTE, json=ORDER, headers={"X-Forwarded-Proto": "https"})
    assert response.json()["wsUrl"].startswith(f"wss://{_host(stack)}{EXECUTE}?orderId=")


async def test_a_foreign_origin_is_refused_before_anything(
    make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(workers=0)
    url = f"{stack.ws_base}{EXECUTE}"
    async with websockets.connect(url, origin=Origin("https://evil.example")) as ws:
        messages = await until_closed(ws, 10)
    assert (ws.close_code, ws.close_reason, messages) == (4403, "origin not allowed", [])
    order = (await stack.http.post(EXECUTE, json=ORDER)).json()
    follow_url = f"{url}?orderId={order['orderId']}"
    async with websockets.connect(follow_url, origin=Origin("https://evil.example")) as ws:
        messages = await until_closed(ws, 10)
    assert (ws.close_code, messages) == (4403, [])  # not even the order's history
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


@pytest.mark.parametrize("same_origin", [True, False], ids=["same-origin", "no-origin"])
async def test_same_origin_and_no_origin_are_accepted(
    make_stack: StackFactory, same_origin: bool
) -> None:
    stack = await make_stack(workers=0)
    answer = await _submit_over_socket(stack, stack.base_url if same_origin else None)
    assert answer.get("type") == "accepted", answer


async def test_allowed_origins_and_public_url_decide_who_may_connect(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(
        workers=0,
        public_url="https://api.example.com",
        allowed_origins="https://app.example.com, http://localhost:5173",
    )
    for origin in ("https://app.example.com", "http://localhost:5173", "https://api.example.com"):
        assert (await _submit_over_socket(stack, origin)).get("type") == "accepted", origin
    # With a public URL the API's origin is that URL's: the Host a request carries is not it.
    for origin in (stack.base_url, "https://evil.example", "https://app.example.com.evil"):
        answer = await _submit_over_socket(stack, origin)
        assert answer == {"closed": 4403, "reason": "origin not allowed"}, origin


def test_a_public_url_that_is_no_url_is_refused() -> None:
    with pytest.raises(ValueError, match="public_url"):
        Settings(_env_file=None, public_url="api.example.com")
