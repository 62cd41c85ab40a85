"""Fixtures for the reliability tests: the service fixtures (tests/service/conftest.py), a clean
Postgres with API keys, the API with settings of the test's choosing, and a TCP proxy in front of
Postgres that a test can cut and restore (tests/utils/proxy.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from models import api_keys
from models.db import make_session_factory
from models.settings import Settings
from tests.service.conftest import (  # noqa: F401  (fixtures, found by pytest through this import)
    pg_engine,
    postgres_url,
    redis_db,
    redis_url,
)
from tests.utils.proxy import TcpProxy


@pytest.fixture
def clean_pg(pg_engine: Engine) -> Engine:  # noqa: F811
    """The session's Postgres, with no jobs, nodes nor keys."""
    with pg_engine.begin() as connection:
        connection.execute(text("TRUNCATE nodes, jobs, api_keys RESTART IDENTITY CASCADE"))
    return pg_engine


def service_settings(postgres_url: str, redis_url: str, **overrides: Any) -> Settings:  # noqa: F811
    values: dict[str, Any] = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "environment": "local",
        "rate_limit_per_minute": 0,
    }
    values.update(overrides)
    return Settings(**values)


def new_token(engine: Engine, name: str) -> tuple[str, str]:
    """(key id, token) of a fresh key."""
    with make_session_factory(engine)() as session:
        created = api_keys.create_key(session, name)
        return str(created.key.id), created.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.restore()
    yield proxy
    proxy.cut()
