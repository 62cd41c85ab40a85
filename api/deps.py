"""Request dependencies: a database session per request, the settings, the dispatcher."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from tokentree.api.dispatch import Dispatcher
from tokentree.models.settings import Settings

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


class ReleasesSession(APIRoute):
    """The route class of every router whose routes take a `SessionDep`: each route closes its
    database session (its connection goes back to the pool) as soon as the route function returns,
    whatever the parameter is called, so no route can forget to.

    FastAPI closes a dependency's session only after the response is serialised, and serialising a sync
    route's response (or running a sync dependency's exit, with `Depends(scope="function")`) takes a
    thread from the same pool of 40 the routes run in. Holding the connection until then, a burst of
    requests fills every thread with routes waiting for a connection that only finished requests,
    themselves waiting for a thread, would give back: a deadlock until the pool timeout (seen with 200
    concurrent submissions). Closing it in the route's own thread needs no other.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _closing_sessions(endpoint), **kwargs)


def _closing_sessions(route: Callable[P, R]) -> Callable[P, R]:
    if inspect.iscoroutinefunction(route):  # none takes a session today; an async one closes it too
        @functools.wraps(route)
        async def closing_async(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return await route(*args, **kwargs)
            finally:
                _close_sessions(kwargs)

        return closing_async  # type: ignore[return-value]

    @functools.wraps(route)
    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return route(*args, **kwargs)
        finally:
            _close_sessions(kwargs)

    return closing


def _close_sessions(arguments: dict[str, Any]) -> None:
    for value in arguments.values():
        if isinstance(value, Session):
            value.close()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
