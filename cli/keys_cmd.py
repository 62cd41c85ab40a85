"""`tokentree keys create NAME | list | revoke ID`: the API keys clients send as `Bearer` tokens.

`create` prints the token on stdout, once (only its SHA-256 is stored), so `TOKEN=$(tokentree keys
create ci)` captures it; what was created goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tokentree.cli.common import Parser, check_schema, load_settings, reaching
from tokentree.cli.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def add_command(commands: argparse._SubParsersAction[Parser]) -> None:
    keys = commands.add_parser("keys", help="API keys (TOKENTREE_REQUIRE_API_KEY): create, list, revoke")
    actions = keys.add_subparsers(dest="keys_command", required=True, parser_class=Parser)
    create = actions.add_parser("create", help="create a key and print its token (shown only this once)")
    create.add_argument("name", help="who or what the key is for")
    create.set_defaults(handler=run_create)
    listing = actions.add_parser("list", help="every key: id, name, token prefix, created, revoked")
    listing.set_defaults(handler=run_list)
    revoke = actions.add_parser("revoke", help="revoke a key: its requests get 401 from now on")
    revoke.add_argument("id", help="the key's id, from `tokentree keys list`")
    revoke.set_defaults(handler=run_revoke)


@contextmanager
def _session() -> Iterator[Session]:
    from tokentree.models.db import engine_from_settings, make_session_factory

    settings = load_settings()
    check_schema(settings)  # migrates the embedded file; refuses a shared database that is behind
    engine = engine_from_settings(settings)
    try:
        with reaching(settings.sqlalchemy_url), make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def run_create(args: argparse.Namespace) -> int:
    from tokentree.models import api_keys

    with _session() as session:
        try:
            created = api_keys.create_key(session, args.name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    print(f"created key {created.key.id} ({created.key.name}); the token follows, shown only this once",
          file=sys.stderr)
    print(created.token)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from tokentree.models import api_keys

    with _session() as session:
        keys = api_keys.list_keys(session)
    if not keys:
        print("no API keys; create one with `tokentree keys create NAME`", file=sys.stderr)
        return 0
    print("id\tname\tprefix\tcreated\tstatus")
    for key in keys:
        state = "active" if key.revoked_at is None else f"revoked {key.revoked_at:%Y-%m-%d %H:%M:%S}"
        print(f"{key.id}\t{key.name}\t{key.prefix}...\t{key.created_at:%Y-%m-%d %H:%M:%S}\t{state}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from tokentree.models import api_keys

    with _session() as session:
        key = api_keys.get_key(session, args.id)
        if key is None:
            raise UsageError(f"no API key with id {args.id!r} (see `tokentree keys list`)")
        if not api_keys.revoke_key(session, key.id):
            print(f"key {key.id} ({key.name}) was already revoked")
            return 0
    print(f"revoked key {key.id} ({key.name})")
    return 0
