"""What an outage of PostgreSQL or Redis looks like, as opposed to a fault in the code.

One list for both processes: the API answers 503 on these (`app.outages`), the worker has its
job run again shortly and logs one line instead of a traceback (`worker.jobs`).
"""

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

POSTGRESQL = "PostgreSQL"
REDIS = "Redis"

# It could not connect, the connection broke, the server is shutting down or starting up, or
# it did not answer in time. Anything else (a constraint, a bug) is not an outage.
PG_OUTAGES: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # connection lost or refused, too many connections
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, cancelled
    asyncpg.InterfaceError,  # the connection was closed under the statement
    # A server that shuts down tells idle connections so unasked; asyncpg then refuses the
    # connection's next statement with this (seen while PostgreSQL stopped mid-order).
    asyncpg.exceptions.InternalClientError,
)
REDIS_OUTAGES: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
# Both drivers surface a refused or reset socket, and their own deadlines, as these builtins.
TRANSPORT_OUTAGES: tuple[type[Exception], ...] = (OSError, TimeoutError)
OUTAGE_ERRORS = (*PG_OUTAGES, *REDIS_OUTAGES, *TRANSPORT_OUTAGES)


def outage_of(exc: BaseException) -> str | None:
    """Which dependency `exc` says is down ("PostgreSQL", "Redis"), or None if it does not
    name one (a bare socket error or timeout: see `TRANSPORT_OUTAGES`)."""
    if isinstance(exc, REDIS_OUTAGES):
        return REDIS
    if isinstance(exc, PG_OUTAGES):
        return POSTGRESQL
    return None
