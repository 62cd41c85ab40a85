"""Alembic builds exactly models/schema.py from an empty database and takes it away again, on both
backends, from Python and from `tokentree db`."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from bench.postgres import PG_SERVER, admin_sql
from tests.utils.cli import run_cli
from tests.utils.databases import unique_suffix
from tokentree.migrations import current_revision, downgrade_database, head_revision, upgrade_database
from tokentree.models.db import make_engine
from tokentree.models.schema import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    name = f"tokentree_migrations_{unique_suffix()}"
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{name}"')
    yield f"{PG_SERVER}/{name}"
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                         Base.metadata))
    finally:
        engine.dispose()


def tables_and_indexes(url: str) -> tuple[set[str], set[str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            tables = set(found.get_table_names())
            indexes = {i["name"] for t in tables for i in found.get_indexes(t) if i["name"]}
            return tables, indexes
    finally:
        engine.dispose()


def test_up_matches_the_schema_and_down_leaves_nothing(empty_database: str) -> None:
    assert current_revision(empty_database) is None
    upgrade_database(empty_database)
    assert current_revision(empty_database) == head_revision()
    assert schema_differences(empty_database) == []
    tables, indexes = tables_and_indexes(empty_database)
    assert tables == {"jobs", "nodes", "api_keys", "studies", "alembic_version"}
    assert {"uq_nodes_job_parent_token", "uq_nodes_job_root", "ix_jobs_status_created"} <= indexes
    downgrade_database(empty_database)
    assert current_revision(empty_database) is None
    assert tables_and_indexes(empty_database) == ({"alembic_version"}, set())
    upgrade_database(empty_database)  # and up again: the downgrade left nothing in the way
    assert schema_differences(empty_database) == []


def test_the_cli_migrates_the_configured_database(empty_database: str) -> None:
    done = run_cli("db", "upgrade", TOKENTREE_DATABASE_URL=empty_database)
    assert done.returncode == 0, done.stderr
    assert f"is at revision {head_revision()}" in done.stdout
    assert current_revision(empty_database) == head_revision()
    current = run_cli("db", "current", TOKENTREE_DATABASE_URL=empty_database)
    assert f"revision {head_revision()}; newest {head_revision()}" in current.stdout
    done = run_cli("db", "downgrade", "--to", "base", TOKENTREE_DATABASE_URL=empty_database)
    assert done.returncode == 0, done.stderr
    assert current_revision(empty_database) is None


def test_passwords_are_not_printed(tmp_path: Path) -> None:
    done = run_cli("db", "current", TOKENTREE_DATABASE_URL="postgresql://u:s3cret@127.0.0.1:1/x")
    assert done.returncode == 2
    assert done.stderr.startswith("tokentree: error: cannot use the database postgresql+psycopg://u:***@")
    assert done.stderr.count("\n") == 1 and "s3cret" not in done.stdout + done.stderr
