"""`python -m worker`: run one arq worker with the engine's settings."""

import asyncio

from arq.worker import Worker

from shared.logs import configure_logging
from shared.settings import get_settings
from worker.settings import worker_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, "worker")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(**worker_settings(settings)).run()


if __name__ == "__main__":
    main()
