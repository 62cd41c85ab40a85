"""The FastAPI application: `create_app(settings, dispatcher)`.

`tokentree serve` builds it; tests build it with their own settings. In the distributed mode (a
Redis URL is set) jobs go out as Celery tasks; in the embedded mode the caller passes the in-process
worker as the dispatcher, since the API never imports `workers/`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from tokentree.api import viewers
from tokentree.api.dispatch import CeleryDispatcher, Dispatcher
from tokentree.api.limits import RequestSizeLimit, export_slots, make_rate_limiter, render_slots, stream_slots
from tokentree.api.metrics import Metrics
from tokentree.api.progress_feed import ProgressFeed
from tokentree.api.routes import compare, growths, jobs, studies, system
from tokentree.api.tree_cache import RenderedTrees
from tokentree.models.db import api_engine, make_session_factory
from tokentree.models.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The API's own Redis calls (health, rate limits, live workers) answer in a millisecond; a Redis that
# takes longer is hung, and every request would wait for it.
BROKER_PING_TIMEOUT_S = 0.5
DATABASE_RETRY_AFTER_S = 5
DATABASE_UNAVAILABLE = {"detail": "database unavailable, retry later"}


class SafeJSONResponse(JSONResponse):
    """JSON that any input echoed back can be written in: ASCII escapes for lone surrogates, and
    non-finite numbers as strings (JSON has no NaN)."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# Validation errors whose library text says nothing a user can act on, and what they mean here.
_NOT_AN_ID = ("is not an id: ids are UUIDs such as 3f2b8c1e-5d7a-4c2e-9b1f-0a6d2e4c8b90 "
              "(check for a cut-off copy)")
_PLAIN_MESSAGES = {"uuid_parsing": _NOT_AN_ID, "uuid_type": _NOT_AN_ID}


def _plain(error: dict[str, Any]) -> dict[str, Any]:
    """`error` with its message in plain words where the library's is not (`loc` still names the field)."""
    message = _PLAIN_MESSAGES.get(error.get("type", ""))
    if message is None:
        return error
    return {key: value for key, value in error.items() if key not in ("ctx", "url")} | {"msg": message}


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse({"detail": jsonable_encoder([_plain(error) for error in exc.errors()])},
                            status_code=422)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError | InterfaceError) \
            and not exc.connection_invalidated:
        raise exc  # a real bug, not an outage: the usual 500
    log.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
    request.app.state.metrics.refused("database")
    return JSONResponse(DATABASE_UNAVAILABLE, status_code=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


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
        dispatcher = owned_dispatcher = CeleryDispatcher(settings.redis_url)
    engine = None
    if session_factory is None:
        engine = api_engine(settings)
        session_factory = make_session_factory(engine)
    broker = None
    if settings.redis_url is not None:
        broker = redis.Redis.from_url(settings.redis_url, socket_timeout=BROKER_PING_TIMEOUT_S,
                                      socket_connect_timeout=BROKER_PING_TIMEOUT_S)

    progress_feed = ProgressFeed(functools.partial(jobs.read_watched, session_factory, broker),
                                 settings.events_interval_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(progress_feed.run)  # the one reader behind every event stream
            yield
            tasks.cancel_scope.cancel()
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
        docs_url=None,  # served by api.viewers from local assets: FastAPI's own page loads them from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.dispatcher = dispatcher
    app.state.session_factory = session_factory
    app.state.broker = broker
    app.state.rendered_trees = RenderedTrees(settings.tree_cache_bytes)
    app.state.rate_limiter = make_rate_limiter(settings, broker)
    app.state.stream_slots = stream_slots(settings)
    app.state.render_slots = render_slots(settings)
    app.state.export_slots = export_slots(settings)
    app.state.progress_feed = progress_feed
    app.state.metrics = Metrics(settings, session_factory, broker)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in (OperationalError, InterfaceError, PoolTimeout, DBAPIError):
        app.add_exception_handler(error, _database_unavailable)
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:  # closed unless the operator lists origins: no CORS headers at all
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.include_router(jobs.router)
    app.include_router(growths.router)
    app.include_router(studies.router)
    app.include_router(compare.router)
    app.include_router(system.router)
    app.include_router(viewers.router)
    viewers.mount_static(app)
    return app
