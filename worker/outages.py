"""What counts as an outage of PostgreSQL or Redis, as opposed to a fault in the code."""

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A step that fails on one of these met a dependency that is down, frozen or restarting: it
# is worth trying again shortly, and worth a one-line warning rather than a traceback.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # connection lost or refused, too many connections
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, cancelled
    # A server that shuts down tells idle connections so unasked; asyncpg then refuses the
    # connection's next statement with this (seen while PostgreSQL stopped mid-order).
    asyncpg.exceptions.InternalClientError,
    RedisConnectionError,
    RedisTimeoutError,
    OSError,  # connect refused, connection reset
    TimeoutError,  # a statement or a pool acquire past its timeout (a frozen server)
)
