"""Fixtures for the service: a Postgres database per test session (created, migrated, dropped), a
Redis database number of its own, and the API served by uvicorn on a free loopback port, in both
modes (embedded on SQLite, and Postgres with Celery on Redis), with an httpx client.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.dispatch import Dispatcher
from migrations import upgrade_database
from models.db import make_engine, make_session_factory
from models.settings import Settings
from tests.utils.databases import fresh_database, fresh_redis
from tests.utils.factories import RecordingDispatcher

REPO_ROOT = Path(__file__).resolve().parents[2]


def unique_suffix() -> str:
    # Several developers (and CI) run the suite on one machine at once: nothing may be shared.
    return f"{os.getpid()}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test session, dropped afterwards."""
    with fresh_database(f"tokentree_test_{unique_suffix()}") as url:
        yield url


@pytest.fixture(scope="session")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def _truncate(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE nodes, jobs RESTART IDENTITY CASCADE"))


@pytest.fixture
def pg_session(pg_engine: Engine) -> Iterator[Session]:
    """A session on the test database, emptied before each test."""
    _truncate(pg_engine)
    with make_session_factory(pg_engine)() as session:
        yield session


@pytest.fixture(scope="session")
def redis_db() -> int:
    """A Redis database number for this session (of 16): spread by pid so parallel runs rarely meet."""
    return 1 + os.getpid() % 15


@pytest.fixture
def redis_url(redis_db: int) -> Iterator[str]:
    with fresh_redis(redis_db) as url:
        yield url


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


# -- the API on a real port ---------------------------------------------------------------------------


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@dataclass
class LiveAPI:
    """A running API: its URL, a client on it, and what it was built from."""

    mode: str
    url: str
    client: httpx.Client
    settings: Settings
    session_factory: sessionmaker[Session]
    dispatcher: Any  # RecordingDispatcher (embedded) or the app's CeleryDispatcher

    def session(self) -> Session:
        return self.session_factory()


@contextmanager
def live_api_for(settings: Settings, dispatcher: Dispatcher | None = None,
                 session_factory: sessionmaker[Session] | None = None, mode: str = "") -> Iterator[LiveAPI]:
    """Serve `create_app(settings, dispatcher)` and yield a `LiveAPI` (the building block of `live_api`;
    end-to-end tests pass a real worker as the dispatcher)."""
    engine = None
    if session_factory is None:
        engine = make_engine(settings.sqlalchemy_url)
        session_factory = make_session_factory(engine)
    app = create_app(settings, dispatcher=dispatcher, session_factory=session_factory)
    try:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield LiveAPI(mode=mode or ("embedded" if settings.embedded else "postgres"), url=url,
                          client=client, settings=settings, session_factory=session_factory,
                          dispatcher=app.state.dispatcher)
    finally:
        if engine is not None:
            engine.dispose()


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(database_url=None, redis_url=None, data_dir=data_dir, environment="local", **overrides)


def postgres_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, environment="local", **overrides)


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.services)])
def live_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveAPI]:
    """The API over HTTP in each mode: embedded (SQLite, jobs recorded by a stand-in dispatcher) and
    distributed (the session's Postgres, tasks sent through Celery to this session's Redis db)."""
    if request.param == "embedded":
        settings = embedded_settings(tmp_path)
        upgrade_database(settings.sqlalchemy_url)
        with live_api_for(settings, RecordingDispatcher()) as api:
            yield api
    else:
        pg_engine: Engine = request.getfixturevalue("pg_engine")
        _truncate(pg_engine)
        settings = postgres_settings(request.getfixturevalue("postgres_url"),
                                     request.getfixturevalue("redis_url"))
        with live_api_for(settings, session_factory=make_session_factory(pg_engine)) as api:
            yield api


def cli_command(*args: str) -> list[str]:
    # Not `-m cli.main`: run as __main__, its UsageError would not be the one cli.service raises.
    return [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())", *args]


def cli_env(**variables: str) -> dict[str, str]:
    """The environment for a `tokentree` subprocess: ours without TOKENTREE_*, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTREE_")}
    env.update(variables)
    return env


def run_cli(*args: str, timeout: float = 120, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the `tokentree` command line in a subprocess from the repository root."""
    return subprocess.run(cli_command(*args), env=cli_env(**variables), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
