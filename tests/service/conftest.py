"""Fixtures for the service: sessions on the session's Postgres (tests/conftest.py) and on a SQLite file,
and the API served over HTTP in both modes (embedded on SQLite, and Postgres with Celery on Redis).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench.factories import RecordingDispatcher
from tests.utils.servers import LiveAPI, embedded_settings, live_api_for, postgres_settings
from tokentree.migrations import upgrade_database
from tokentree.models.db import make_engine, make_session_factory


@pytest.fixture
def pg_session(clean_pg: Engine) -> Iterator[Session]:
    """A session on the test database, emptied before each test."""
    with make_session_factory(clean_pg)() as session:
        yield session


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+pysqlite:///{tmp_path / 'tokentree.sqlite3'}"
    upgrade_database(url)
    return url


@pytest.fixture
def sqlite_session(sqlite_url: str) -> Iterator[Session]:
    engine = make_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db_session(request: pytest.FixtureRequest) -> Session:
    """A session on each backend in turn (storage tests run on both)."""
    name = "pg_session" if request.param == "postgres" else "sqlite_session"
    return request.getfixturevalue(name)


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.services)])
def live_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveAPI]:
    """The API over HTTP in each mode: embedded (SQLite, jobs recorded by a stand-in dispatcher) and
    distributed (the session's Postgres, emptied; tasks sent through Celery to the session's Redis)."""
    if request.param == "embedded":
        settings = embedded_settings(tmp_path)
        upgrade_database(settings.sqlalchemy_url)
        with live_api_for(settings, RecordingDispatcher()) as api:
            yield api
    else:
        pg_engine: Engine = request.getfixturevalue("clean_pg")
        settings = postgres_settings(request.getfixturevalue("postgres_url"),
                                     request.getfixturevalue("redis_url"))
        with live_api_for(settings, session_factory=make_session_factory(pg_engine)) as api:
            yield api
