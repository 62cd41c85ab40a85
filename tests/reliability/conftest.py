"""Fixtures for the reliability tests: the service fixtures (tests/service/conftest.py), a clean
Postgres with API keys, the API with settings of the test's choosing, and a TCP proxy in front of
Postgres that a test can cut and restore."""

from __future__ import annotations

import contextlib
import socket
import threading
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


class TcpProxy:
    """Forwards a free loopback port to `target`; `cut()` closes the listener and every connection (the
    database is gone, as after a crash or a network split), `restore()` listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self.listener is not None:
            # shutdown first: close() alone leaves a socket blocked in accept() listening (Linux).
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self.connections.clear()


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.restore()
    yield proxy
    proxy.cut()
