"""The API on a real loopback port: a free port, an app served by uvicorn in a thread, and `live_api_for`
(the app built from settings, with a client on it) in the embedded mode or on Postgres and Redis."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from tokentree.api.app import create_app
from tokentree.api.dispatch import Dispatcher
from tokentree.models.db import make_engine, make_session_factory
from tokentree.models.settings import Settings


def free_port() -> int:
    """A loopback port nothing listens on now (for a server of another process to take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: FastAPI, **config: Any) -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yields its base URL. `config`: more
    of uvicorn's settings (the defaults: warnings only, the app's lifespan run)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", "lifespan": "on", **config}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
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
    dispatcher: Any  # RecordingDispatcher (embedded), a real worker, or the app's CeleryDispatcher

    def session(self) -> Session:
        return self.session_factory()


@contextmanager
def live_api_for(settings: Settings, dispatcher: Dispatcher | None = None,
                 session_factory: sessionmaker[Session] | None = None, mode: str = "") -> Iterator[LiveAPI]:
    """Serve `create_app(settings, dispatcher)` and yield a `LiveAPI`. End-to-end tests pass a real worker
    as the dispatcher; without one, the app sends tasks through Celery to the settings' Redis."""
    engine = None
    if session_factory is None:
        engine = make_engine(settings.sqlalchemy_url)
        session_factory = make_session_factory(engine)
    app = create_app(settings, dispatcher=dispatcher, session_factory=session_factory)
    try:
        # 60 s: a big tree read on a machine busy with workers can take a while; a hang still ends.
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
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
