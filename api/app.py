"""The FastAPI application: `create_app(settings, dispatcher)`.

`tokentree serve` builds it; tests build it with their own settings. In the distributed mode (a
Redis URL is set) jobs go out as Celery tasks; in the embedded mode the caller passes the in-process
worker as the dispatcher, since the API never imports `workers/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from api import viewers
from api.dispatch import CeleryDispatcher, Dispatcher
from api.limits import RequestSizeLimit
from api.routes import jobs, system
from api.tree_cache import RenderedTrees
from models.db import engine_from_settings, make_session_factory
from models.settings import Settings, get_settings

BROKER_PING_TIMEOUT_S = 2


def create_app(
    settings: Settings | None = None,
    dispatcher: Dispatcher | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> FastAPI:
    """The API and the viewers. `dispatcher` is required in the embedded mode (no Redis URL);
    `session_factory` defaults to one on the settings' database (pass one to share it with a worker)."""
    settings = settings or get_settings()
    owned_dispatcher: CeleryDispatcher | None = None
    if dispatcher is None:
        if settings.redis_url is None:
            raise ValueError("the embedded mode needs a dispatcher: tokentree serve passes its worker")
        dispatcher = owned_dispatcher = CeleryDispatcher(settings.redis_url, settings.cancel_ttl_s)
    engine = None
    if session_factory is None:
        engine = engine_from_settings(settings)
        session_factory = make_session_factory(engine)
    broker = None
    if settings.redis_url is not None:
        broker = redis.Redis.from_url(settings.redis_url, socket_timeout=BROKER_PING_TIMEOUT_S,
                                      socket_connect_timeout=BROKER_PING_TIMEOUT_S)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned_dispatcher is not None:
            owned_dispatcher.close()
        if broker is not None:
            broker.close()
        if engine is not None:
            engine.dispose()

    app = FastAPI(
        title="tokentree",
        summary="See how a language model decides: expand, store and view token trees.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.dispatcher = dispatcher
    app.state.session_factory = session_factory
    app.state.broker = broker
    app.state.rendered_trees = RenderedTrees(settings.tree_cache_bytes)
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    app.include_router(jobs.router)
    app.include_router(system.router)
    app.include_router(viewers.router)
    viewers.mount_static(app)
    return app
