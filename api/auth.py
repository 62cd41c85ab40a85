"""Who is calling: the API key in `Authorization: Bearer <token>`, checked against `api_keys`.

With TOKENTREE_REQUIRE_API_KEY=true every /v1 request needs a live key (401 otherwise). Without it,
a request may still present a key (and then sees only that key's jobs); one without is anonymous and
sees every job, as on a laptop. A wrong or revoked key is a 401 either way, never silently anonymous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from tokentree.api.deps import SettingsDep
from tokentree.models import api_keys

bearer = HTTPBearer(auto_error=False, description="an API key from `tokentree keys create NAME`")


@dataclass(frozen=True)
class Caller:
    """The key behind a request (None: anonymous, possible only when keys are not required)."""

    key_id: str | None
    address: str

    @property
    def owner(self) -> str | None:
        """What the caller's jobs carry in `jobs.owner`; None means no restriction (anonymous)."""
        return self.key_id

    @property
    def identity(self) -> str:
        """The name rate limits count under: the key, or the client's address without one."""
        return f"key:{self.key_id}" if self.key_id else f"addr:{self.address}"


def _unauthorized(request: Request, message: str) -> HTTPException:
    request.app.state.metrics.refused("auth")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def get_caller(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    address = request.client.host if request.client else "unknown"
    if credentials is None:
        if "authorization" in request.headers:
            raise _unauthorized(request, "the Authorization header must be `Bearer <API key>`")
        if settings.require_api_key:
            raise _unauthorized(request, "an API key is required: send `Authorization: Bearer <API key>`")
        return Caller(key_id=None, address=address)
    # Its own short session: streaming routes must not hold a pooled connection for their lifetime.
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        key = api_keys.find_active(session, credentials.credentials)
    if key is None:
        raise _unauthorized(request, "the API key is not valid (unknown or revoked)")
    return Caller(key_id=str(key.id), address=address)


CallerDep = Annotated[Caller, Depends(get_caller)]
