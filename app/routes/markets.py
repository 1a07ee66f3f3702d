"""`GET /api/tokens`, `GET /api/markets` and the market tick stream (WebSocket
`/api/markets/stream`), what the dashboard's ticket and market panel read."""

import asyncio
import contextlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from app import markets
from app.callers import Reader, websocket_caller
from app.deps import Res, get_resources
from app.errors import ERROR_RESPONSES
from app.markets import Markets, TokenList
from app.routes.ws import CLOSE_FORBIDDEN_ORIGIN
from app.stream import CLOSE_TRY_AGAIN
from shared.apikeys import Scope
from shared.errors import ServiceUnavailable
from shared.sim.prices import HISTORY_LEN

router = APIRouter(prefix="/api", tags=["market"])

MARKETS_STREAM_PATH = "/api/markets/stream"
# How often a stream looks at the market: the ticker moves it once a second by default, and
# fills move it in between.
STREAM_INTERVAL_S = 1.0
_POINTS = "^(?:[0-9]|[1-9][0-9]|[12][0-9]{2}|300)$"  # 0-300 (HISTORY_LEN), plain digits


@router.get("/tokens", response_model=TokenList, responses=ERROR_RESPONSES)
async def tokens(_: Reader) -> dict[str, Any]:
    """The tokens the engine trades and the pairs some pool trades (in either direction)."""
    return markets.token_list()


@router.get("/markets", response_model=Markets, responses=ERROR_RESPONSES)
async def market_prices(
    res: Res,
    _: Reader,
    points: Annotated[
        str, Query(pattern=_POINTS, description=f"history points per pair, 0-{HISTORY_LEN}")
    ] = "120",
) -> dict[str, Any]:
    """Each pair's price on both venues now, the gap between them, and the last `points`
    market ticks (oldest first) for charts."""
    return await markets.markets(res.redis_guard, res.market, int(points))


@router.websocket("/markets/stream")
async def market_stream(websocket: WebSocket) -> None:
    """`{"type": "markets", "at", "markets": [...]}` (as `GET /api/markets`, without history)
    at once and then whenever a price changes, checked every `STREAM_INTERVAL_S`. Needs `read`
    (a key header or `?token=`); closes 1013 while Redis is unavailable (reconnect)."""
    res = await get_resources(websocket)
    await websocket.accept()
    if not res.origins.allows(websocket):
        await websocket.close(CLOSE_FORBIDDEN_ORIGIN, "origin not allowed")
        return
    if await websocket_caller(websocket, res, Scope.READ) is None:
        return
    closed = asyncio.create_task(_until_closed(websocket))
    try:
        last: list[dict[str, Any]] | None = None
        while not closed.done():
            snapshot = await markets.markets(res.redis_guard, res.market, 0)
            if snapshot["markets"] != last:
                last = snapshot["markets"]
                await websocket.send_text(orjson.dumps({"type": "markets", **snapshot}).decode())
            await asyncio.wait({closed}, timeout=STREAM_INTERVAL_S)
    except ServiceUnavailable as err:
        await websocket.close(CLOSE_TRY_AGAIN, err.message[:120])
    except WebSocketDisconnect:
        return
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await closed


async def _until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends until it goes away."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass
