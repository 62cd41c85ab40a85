"""Throwaway databases for test sessions: Postgres databases created fresh, migrated and dropped
afterwards; Redis database numbers flushed before and after. The suite needs the real servers: when one
is not reachable a test fails, never skips."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from sqlalchemy import text

from migrations import upgrade_database
from models.db import make_engine

PG_SERVER = os.environ.get("TOKENTREE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("TOKENTREE_TEST_REDIS", "redis://127.0.0.1:6379")


def admin_sql(statement: str, server: str = PG_SERVER) -> None:
    engine = make_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(name: str, server: str = PG_SERVER) -> Iterator[str]:
    """A new database `name` at the migrations' head; its URL. The suite needs the real Postgres:
    if it is not reachable this fails (it does not skip). The benchmarks use it too."""
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', server)
    admin_sql(f'CREATE DATABASE "{name}"', server)
    url = f"{server}/{name}"
    try:
        upgrade_database(url)
        yield url
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', server)


@contextmanager
def fresh_redis(number: int, server: str = REDIS_SERVER) -> Iterator[str]:
    """Redis database `number` (of 16), empty; its URL. Several runs share one Redis server, so callers
    spread their numbers (by pid) to rarely meet."""
    url = f"{server}/{number}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()
