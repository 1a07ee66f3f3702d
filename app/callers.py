"""FastAPI dependencies that give a route its caller, with the scope it needs checked.

`POST /api/orders/execute` takes only the request (the busiest route solves no dependencies)
and the WebSocket must be open before it can be closed with a code: both call the
authenticator themselves, the same way.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security, WebSocket
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.auth import require
from app.deps import Res, Resources
from shared.apikeys import Caller, Scope
from shared.errors import EngineError

# Documented in OpenAPI as the two ways to send a key; the header is read by `app.auth`.
BEARER = HTTPBearer(scheme_name="bearer", auto_error=False, description="an API key")
API_KEY = APIKeyHeader(
    name="X-API-Key", scheme_name="apiKey", auto_error=False, description="an API key"
)
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def needs(scope: Scope, sim: bool = False) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the request's caller if it has `scope`, else 401/403. `sim`: the
    simulation's controls, open to anonymous callers in AUTH_MODE=open."""

    async def caller(
        request: Request,
        res: Res,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        _key: Annotated[str | None, Security(API_KEY)],
    ) -> Caller:
        return require(await res.auth.from_headers(request, sim=sim), scope)

    return caller


Reader = Annotated[Caller, Depends(needs(Scope.READ))]
Trader = Annotated[Caller, Depends(needs(Scope.TRADE))]
Admin = Annotated[Caller, Depends(needs(Scope.ADMIN))]
SimAdmin = Annotated[Caller, Depends(needs(Scope.ADMIN, sim=True))]


async def websocket_caller(ws: WebSocket, res: Resources, needed: Scope) -> Caller | None:
    """An accepted socket's caller (`?token=`, else its headers) if it has `needed`; else
    None, the socket closed with 4000 + the HTTP status (4401 no or bad credentials, 4403
    scope, 4429 too many bad keys, 4503 outage) and the reason."""
    try:
        return require(await res.auth.from_websocket(ws), needed)
    except EngineError as err:
        await ws.close(4000 + err.status_code, err.message[:120])
        return None
