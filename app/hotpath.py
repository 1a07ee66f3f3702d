"""Routes for the two requests every order makes (`POST` and the WebSocket on
`/api/orders/execute`): FastAPI's own routes, minus FastAPI's per-request work when a route
gives it none to do.

FastAPI's request handling solves the endpoint's parameters and dependencies, runs them under
exit stacks, and validates and serializes what the endpoint returns. An endpoint that takes
only the `Request` (or the `WebSocket`) and returns a `Response`, on a route with no
dependency, has nothing for any of that to do, yet pays for it on every request. These hand
such an endpoint straight to the route instead, through public hooks:
`APIRoute.get_route_handler` (FastAPI's documented way to customize a route's handler) for the
POST; for the WebSocket, the route's ASGI app, set to Starlette's `websocket_session` of the
endpoint (what Starlette's own `WebSocketRoute` runs). Everything outside the handler is
untouched: the app's middleware, its exception handlers, body limits, route matching and the
OpenAPI document.

They fail closed. The shortcut is taken only while the route's own constructor builds its
handler, and only when the route's dependant declares nothing but the connection: a route
given a dependency (`create_app`'s `api_dependencies`), or an endpoint that grows a parameter,
gets FastAPI's handler, so the dependency runs and `dependency_overrides` reach it. A router
that includes one of these routes builds a handler of its own, with its own dependencies, and
gets FastAPI's too. `tests/test_hot_path.py` proves each guard on both requests.
"""

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, get_type_hints

from fastapi import FastAPI, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import websocket_session


def takes_only_the_connection(dependant: Dependant) -> bool:
    """Whether FastAPI would solve nothing for this endpoint: no dependency, no parameter but
    the `Request` or `WebSocket` itself."""
    return (
        not dependant.dependencies
        and not dependant.path_params
        and not dependant.query_params
        and not dependant.header_params
        and not dependant.cookie_params
        and not dependant.body_params
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
        and dependant.http_connection_param_name is None
        and (dependant.request_param_name is None) != (dependant.websocket_param_name is None)
    )


def _returns_a_response(endpoint: Callable[..., Any]) -> bool:
    """Whether the endpoint is annotated to return a `Response`, which FastAPI would send as it
    is (a `response_model` then only documents the body)."""
    returns = get_type_hints(endpoint).get("return")
    return isinstance(returns, type) and issubclass(returns, Response)


class ConnectionOnlyRoute(APIRoute):
    """An `APIRoute` whose endpoint, when it takes only the `Request` and is annotated to return
    a `Response`, on a route with no dependency, is its handler (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._constructing = True
        try:
            super().__init__(*args, **kwargs)
        finally:
            self._constructing = False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if (
            self._constructing
            and _returns_a_response(self.endpoint)
            and takes_only_the_connection(self.dependant)
        ):
            endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
            return endpoint
        return super().get_route_handler()


def add_connection_only_websocket_route(
    app: FastAPI,
    path: str,
    endpoint: Callable[..., Awaitable[None]],
    dependencies: Sequence[params.Depends],
) -> None:
    """`app.add_api_websocket_route`; then, when the endpoint takes only the `WebSocket` and the
    route has no dependency (its own, or the app router's), the route runs the endpoint as a
    Starlette WebSocket route does (see the module docstring). A router that includes this
    route builds an `APIWebSocketRoute` of its own, with FastAPI's handling."""
    app.add_api_websocket_route(path, endpoint, dependencies=list(dependencies))
    route = app.router.routes[-1]
    if not isinstance(route, APIWebSocketRoute) or route.endpoint is not endpoint:
        raise RuntimeError(f"FastAPI did not append the route for {path} to the app's router")
    if takes_only_the_connection(route.dependant):
        route.app = websocket_session(endpoint)
