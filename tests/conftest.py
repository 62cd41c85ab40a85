"""Fixtures shared by every test folder: the demo model and tiny random models; the session's own Postgres
database (created, migrated, dropped) and its own `redis-server` (started on a free port, stopped at the
end), so that runs at once on one machine never meet.

The helpers behind them are in tests/utils (and bench/, for what the benchmarks use too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tests.utils.redis_server import RedisServer

# Nothing in the tests may reach the network; fail fast if something tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo():  # type: ignore[no-untyped-def]
    from tokentree.engine.loading import ModelSpec, load_model

    return load_model(ModelSpec(name="demo"))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from bench.tiny_models import ARCHITECTURES, make_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: make_tiny_model(root / arch, arch) for arch in ARCHITECTURES}


# -- Postgres and Redis (imported here, not at the top: the engine's tests need neither) --------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test session, dropped afterwards."""
    from bench.postgres import fresh_database
    from tests.utils.databases import unique_suffix

    with fresh_database(f"tokentree_test_{unique_suffix()}") as url:
        yield url


@pytest.fixture(scope="session")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    from tokentree.models.db import make_engine

    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_pg(pg_engine: Engine) -> Engine:
    """The session's Postgres, with no jobs, nodes nor keys."""
    from tests.utils.databases import empty_tables

    empty_tables(pg_engine)
    return pg_engine


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This session's own `redis-server`: what it holds no other run can see or flush. Long-lived users
    (worker processes a module keeps) take its URL; a test that needs it empty takes `redis_url`."""
    from tests.utils.redis_server import private_redis

    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, empty for this test (and emptied again after it)."""
    redis_server.flush()
    yield f"{redis_server.url}/0"
    redis_server.flush()
