"""`python -m app`: serve the API with uvicorn on HOST:PORT; `python -m app keys|accounts …`:
manage API keys and account limits (`app.cli`)."""

import sys

import uvicorn

from app.wsserver import SERVER_PROTOCOLS
from shared.logs import configure_logging
from shared.settings import get_settings


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
        **SERVER_PROTOCOLS,
        proxy_headers=True,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
