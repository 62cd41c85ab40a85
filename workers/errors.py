"""What a worker tells apart when a unit fails: the service's trouble (a lost connection to Postgres or
Redis, waited out and retried) or the work's own (counted as an attempt on the nodes held)."""

from __future__ import annotations

import redis
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError


class WriterConnectionLost(ConnectionError):
    """The node writer process lost its connection to Postgres or Redis (its message says which)."""


# What a lost database or broker raises (anything else is the unit's own error).
DEPENDENCY_ERRORS = (SQLAlchemyError, redis.RedisError, WriterConnectionLost)


def is_connection_loss(error: BaseException) -> bool:
    """Whether `error` says a connection to Postgres or Redis failed (the service's trouble, not the
    work's): such a failure is waited out and retried, never counted as an attempt on the nodes."""
    lost = (redis.ConnectionError, redis.TimeoutError, OperationalError, WriterConnectionLost)
    if isinstance(error, lost):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated
