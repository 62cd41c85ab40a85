"""What the commands share: the argument parser and the settings and database helpers.

It imports no command module, so every command can import it and no import circle forms (an
import-linter contract keeps cli/ acyclic). Heavy libraries are imported inside the functions: parsing the
command line must stay fast for the commands that never touch a database.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from tokentree.cli.errors import USAGE_ERROR, UsageError

if TYPE_CHECKING:
    from tokentree.models.settings import Settings


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless it has none worth showing (None, a switch that is
    off, an empty list) or the help already explains it (a default that depends on the environment)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        positional_without_default = not action.option_strings and action.nargs not in ("?", "*")
        if ("default" in text or positional_without_default
                or default is None or default is False or default == [] or default == argparse.SUPPRESS):
            return action.help
        return f"{text} (default %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) so scripts can read them, and help shows the
    defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"tokentree: error: {message}\n")


def load_settings() -> Settings:
    """The settings, or a one-line usage error naming the variable that is wrong."""
    from pydantic import ValidationError

    from tokentree.models.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "TOKENTREE_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise UsageError(f"{where}: {error['msg']}") from None


def redacted(url: str) -> str:
    """A database URL fit to print: its password hidden."""
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """An unreachable database is the user's to fix: one line naming it (password hidden)."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise UsageError(f"cannot use the database {redacted(url)}: {reason}") from None


def check_schema(settings: Settings) -> None:
    """Migrate the embedded SQLite file; refuse to use a shared database that is behind."""
    from tokentree.migrations import current_revision, head_revision, upgrade_database

    url = settings.sqlalchemy_url
    with reaching(url):
        if settings.database_url is None:
            upgrade_database(url)
            return
        current, head = current_revision(url), head_revision()
    if current != head:
        raise UsageError(f"the database is at revision {current or 'base (empty)'}, this code needs {head}: "
                         "run `tokentree db upgrade`")
