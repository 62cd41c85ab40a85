"""The API key repository: every query on the `api_keys` table lives here.

A token is `tt_` and 43 URL-safe characters (32 random bytes). It is shown once, when the key is
created; the table keeps its SHA-256 (a lookup by an indexed hash, so checking a key costs one query)
and its first characters to tell keys apart. A job's `owner` is the id of the key that submitted it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tokentree.models.schema import ApiKey, db_now

TOKEN_PREFIX = "tt_"
DISPLAY_CHARS = 10  # "tt_" and 7 characters of the secret: enough to tell keys apart, useless to guess
MAX_NAME_CHARS = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    token: str  # the only time the token exists outside the client


def create_key(session: Session, name: str) -> CreatedKey:
    """A new key named `name`; commits. The token is returned here and never stored."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a key's name must be 1 to {MAX_NAME_CHARS} characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=token[:DISPLAY_CHARS], hash=hash_token(token))
    session.add(key)
    session.commit()
    return CreatedKey(key=key, token=token)


def find_active(session: Session, token: str) -> ApiKey | None:
    """The key this token belongs to, unless it was revoked (or never existed)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return session.scalar(select(ApiKey).where(ApiKey.hash == hash_token(token), ApiKey.revoked_at.is_(None)))


def active_ids(session: Session, key_ids: Iterable[uuid.UUID | str]) -> set[str]:
    """Those of the keys that exist and are not revoked, in one query (every open event stream's key is
    checked at once, as they go)."""
    keys = set()
    for key_id in key_ids:
        try:
            keys.add(key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(str(key_id)))
        except ValueError:
            continue  # not a key id: not an active key
    if not keys:
        return set()
    found = session.scalars(select(ApiKey.id).where(ApiKey.id.in_(keys), ApiKey.revoked_at.is_(None)))
    return {str(key) for key in found}


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def get_key(session: Session, key_id: uuid.UUID | str) -> ApiKey | None:
    try:
        key = key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(str(key_id))
    except ValueError:
        return None
    return session.get(ApiKey, key, populate_existing=True)


def revoke_key(session: Session, key_id: uuid.UUID) -> bool:
    """Revoke a key from now on; True if this call did it (False: already revoked). Commits."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=db_now())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0) == 1)
