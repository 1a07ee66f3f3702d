"""`python -m worker`: run one arq worker, and keep running it through Redis outages."""

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from shared.jobqueue import QueueWorker
from shared.logs import configure_logging
from shared.settings import Settings, get_settings
from worker.settings import shutdown, worker_settings

log = logging.getLogger("worker")

RECONNECT_MAX_S = 10.0


async def serve(settings: Settings) -> None:
    """Run workers one after another until a signal stops one.

    arq's loop ends with an exception when Redis goes away; PostgreSQL holds every order's
    state, so starting a fresh worker once Redis answers again loses nothing.
    """
    delay_s = 0.5
    while True:
        worker = QueueWorker(**worker_settings(settings))
        try:
            await worker.async_run()
            return
        except asyncio.CancelledError:  # SIGINT/SIGTERM: arq cancels its main task
            return
        except (RedisError, OSError) as exc:
            log.warning("lost Redis (%r); starting again in %.1f s", exc, delay_s)
        finally:
            try:
                await worker.close()
            except (RedisError, OSError):
                await shutdown(worker.ctx)  # close() could not reach on_shutdown itself
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, RECONNECT_MAX_S)


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, "worker")
    with contextlib.suppress(ImportError):  # uvloop is optional off Linux/macOS
        import uvloop

        uvloop.install()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
