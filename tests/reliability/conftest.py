"""Fixtures for the reliability tests: the API's settings on the session's Postgres and Redis
(tests/conftest.py) with the rate limiter off unless a test turns it on, API keys, and a TCP proxy in
front of Postgres that a test can cut and restore (tests/utils/proxy.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.utils.proxy import TcpProxy
from tests.utils.servers import postgres_settings
from tokentree.models import api_keys
from tokentree.models.db import make_session_factory
from tokentree.models.settings import Settings


def service_settings(postgres_url: str, redis_url: str, **overrides: Any) -> Settings:
    return postgres_settings(postgres_url, redis_url, **{"rate_limit_per_minute": 0, **overrides})


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
