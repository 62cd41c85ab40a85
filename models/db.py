"""Database engines and sessions, from the settings.

Postgres goes through psycopg 3. SQLite (the embedded mode) is shared by the API's threads and the
in-process worker, so it runs in WAL mode (readers never block the writer) with a busy timeout
(writers queue instead of failing), and with foreign keys on so deleting a job deletes its nodes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from tokentree.models.deadline import StatementDeadline
from tokentree.models.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Postgres' `clock_timestamp()`, which `models.schema.db_now` reads: in the one-process mode the
    # database's clock is the process's, written as SQLAlchemy writes a datetime (SQLite's has ms only).
    dbapi_connection.create_function(
        "clock_timestamp", 0, lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; a SQLite file's folder is created on first use."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        timeout_s = SQLITE_BUSY_TIMEOUT_MS / 1000
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": timeout_s})
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    """The settings' database; connecting to a Postgres gives up after `db_connect_timeout_s`."""
    if make_url(settings.sqlalchemy_url).get_backend_name() == "postgresql":
        given = kwargs.get("connect_args", {})
        kwargs["connect_args"] = {"connect_timeout": settings.db_connect_timeout_s, **given}
    return make_engine(settings.sqlalchemy_url, **kwargs)


def api_engine(settings: Settings) -> Engine:
    """The API's engine: a pool as large as its thread pool, and a quick failure when the database
    is gone (the API answers 503 rather than holding the request)."""
    kwargs: dict[str, Any] = {"pool_timeout": settings.db_pool_timeout_s}
    if make_url(settings.sqlalchemy_url).get_backend_name() == "postgresql":
        statement_ms = int(settings.db_statement_timeout_s * 1000)
        lock_ms = int(settings.db_lock_timeout_s * 1000)
        kwargs.update(pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow, connect_args={
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}",
            # libpq's TCP keepalive: a silent server (frozen, cut off) breaks the connection instead of
            # holding a request until the operating system gives up, minutes later.
            "keepalives": 1, "keepalives_idle": settings.db_keepalive_s,
            "keepalives_interval": max(1, settings.db_keepalive_s // 2), "keepalives_count": 2,
        })
        engine = engine_from_settings(settings, **kwargs)
        StatementDeadline(engine, settings.db_read_timeout_s)  # a frozen server: keepalive cannot tell
        return engine
    return engine_from_settings(settings, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: a job returned by a repository function stays readable after its commit.
    return sessionmaker(bind=engine, expire_on_commit=False)

