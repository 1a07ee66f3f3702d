"""`python -m app`: serve the API with uvicorn on HOST:PORT."""

import logging

import uvicorn

from app.wsserver import SERVER_PROTOCOLS
from shared.logs import configure_logging
from shared.settings import get_settings

# uvicorn (and websockets through uvicorn's logger) log three lines per WebSocket: an access
# log in all but name. Like the HTTP access log it is off: at hundreds of sockets a second it
# is a measurable share of the API's CPU.
_SOCKET_ACCESS = frozenset(
    {'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"}
)


def _not_socket_access(record: logging.LogRecord) -> bool:
    return record.msg not in _SOCKET_ACCESS


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, "api")
    logging.getLogger("uvicorn.error").addFilter(_not_socket_access)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="auto",
        **SERVER_PROTOCOLS,
        proxy_headers=True,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
