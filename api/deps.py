"""Request dependencies: a database session per request, the settings, the dispatcher."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.dispatch import Dispatcher
from models.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


SessionDep = Annotated[Session, Depends(get_db)]


def releases_session(route: Callable[P, R]) -> Callable[P, R]:
    """Close the route's session (its connection goes back to the pool) as soon as the route returns.

    FastAPI closes a dependency's session only after the response is serialised, and serialising a
    sync route's response takes a thread from the same pool of 40 the routes run in. Holding the
    connection until then, a burst of requests fills every thread with routes waiting for a connection
    that only finished requests, themselves waiting for a thread, would give back: a deadlock until the
    pool timeout (seen with 200 concurrent submissions). Every route with a SessionDep wears this.
    """

    @functools.wraps(route)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return route(*args, **kwargs)
        finally:
            session = kwargs.get("session")
            if isinstance(session, Session):
                session.close()

    return wrapper
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
