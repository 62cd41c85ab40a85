"""Throwaway Postgres databases: created fresh, migrated to the head, and dropped afterwards. The test
sessions (tests/conftest.py) and the benchmarks make theirs here. When the server is not reachable this
fails: the suite needs the real Postgres, and never skips without it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from tokentree.migrations import upgrade_database
from tokentree.models.db import make_engine

PG_SERVER = os.environ.get("TOKENTREE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


def admin_sql(statement: str, server: str = PG_SERVER) -> None:
    engine = make_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(name: str, server: str = PG_SERVER) -> Iterator[str]:
    """A new database `name` at the migrations' head; its URL."""
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', server)
    admin_sql(f'CREATE DATABASE "{name}"', server)
    url = f"{server}/{name}"
    try:
        upgrade_database(url)
        yield url
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', server)
