"""`python -m app`: serve the API with uvicorn on HOST:PORT; `python -m app keys|accounts …`:
manage API keys and account limits (`app.cli`)."""

import sys
from typing import Any

import uvicorn

from app.wsserver import SERVER_PROTOCOLS
from shared.logs import configure_logging
from shared.settings import Settings, get_settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the API, shared by `python -m app` and the tests: our protocols,
    and forwarded headers believed only from `FORWARDED_ALLOW_IPS` (uvicorn's own default
    would trust 127.0.0.1, so any local process could claim any client address)."""
    proxies = settings.forwarded_allow_ips.strip()
    return SERVER_PROTOCOLS | {
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
    }


def main() -> None:
    if sys.argv[1:]:
        from app.cli import main as cli  # only the CLI needs argparse and its commands

        raise SystemExit(cli(sys.argv[1:]))
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, "api")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="auto",
        **server_options(settings),
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
