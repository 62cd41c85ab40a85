"""Service commands: `serve`, `db upgrade|downgrade|current` and `models` (`keys`, `status` and `worker`
have modules of their own).

`tokentree serve` with no TOKENTREE_DATABASE_URL / TOKENTREE_REDIS_URL is the whole product in one
process: SQLite under the data folder (migrated on start) and an in-process worker. With them set it
is the API alone, and `tokentree worker` processes do the work.
"""

from __future__ import annotations

import argparse
import gc
import logging

from tokentree.cli.common import Parser, check_schema, load_settings, reaching, redacted
from tokentree.cli.errors import UsageError


def add_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register the service subcommands; each sets `handler`."""
    serve = commands.add_parser("serve", help="run the API and the viewers (embedded: with a worker inside)")
    serve.add_argument("--host", help="address to listen on (default: TOKENTREE_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: TOKENTREE_PORT, 8000)")
    serve.set_defaults(handler=run_serve)

    db = commands.add_parser("db", help="database schema migrations (TOKENTREE_DATABASE_URL)")
    steps = db.add_subparsers(dest="db_command", required=True, parser_class=Parser)
    upgrade = steps.add_parser("upgrade", help="apply migrations (to the newest by default)")
    upgrade.add_argument("--to", default="head", metavar="REVISION", help="the revision to reach")
    upgrade.set_defaults(handler=run_db_upgrade)
    downgrade = steps.add_parser("downgrade", help="undo migrations; `--to base` empties the database")
    downgrade.add_argument("--to", required=True, metavar="REVISION", help="a revision, -1, or base")
    downgrade.set_defaults(handler=run_db_downgrade)
    current = steps.add_parser("current", help="print the database's revision and the newest")
    current.set_defaults(handler=run_db_current)

    models = commands.add_parser("models", help="list the models jobs may name (TOKENTREE_MODELS)")
    models.set_defaults(handler=run_models)


def run_db_upgrade(args: argparse.Namespace) -> int:
    from tokentree.migrations import current_revision, upgrade_database

    url = load_settings().sqlalchemy_url
    with reaching(url):
        upgrade_database(url, args.to)
        print(f"{redacted(url)} is at revision {current_revision(url)}")
    return 0


def run_db_downgrade(args: argparse.Namespace) -> int:
    from tokentree.migrations import current_revision, downgrade_database

    url = load_settings().sqlalchemy_url
    with reaching(url):
        downgrade_database(url, args.to)
        print(f"{redacted(url)} is at revision {current_revision(url) or 'base (empty)'}")
    return 0


def run_db_current(args: argparse.Namespace) -> int:
    from tokentree.migrations import current_revision, head_revision

    url = load_settings().sqlalchemy_url
    with reaching(url):
        current = current_revision(url) or "base (empty)"
    print(f"{redacted(url)}: revision {current}; newest {head_revision()}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    settings = load_settings()
    for name, source in settings.models.items():
        default = "  (default)" if name == settings.default_model else ""
        options = settings.model_options.get(name)
        loading = f"\t{options.describe()}" if options is not None else ""
        print(f"{name}\t{source}{loading}{default}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tokentree.api.app import create_app
    from tokentree.api.http_protocol import with_head_timeout
    from tokentree.api.logs import configure_logging
    from tokentree.models.db import api_engine, make_session_factory

    settings = load_settings()
    configure_logging(settings)
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    check_schema(settings)
    engine = api_engine(settings)
    session_factory = make_session_factory(engine)
    worker = None
    if settings.embedded:
        try:
            from tokentree.workers.local import LocalWorker
        except ModuleNotFoundError as exc:
            raise UsageError("the in-process worker (workers.local) is missing; install tokentree fully, "
                             "or set TOKENTREE_DATABASE_URL and TOKENTREE_REDIS_URL for `tokentree worker`"
                             ) from exc
        worker = LocalWorker(settings, session_factory)
        worker.start()
    mode = "embedded: SQLite and an in-process worker" if settings.database_url is None else (
        "with an in-process worker" if settings.embedded else "API only; jobs go to `tokentree worker`")
    database = redacted(settings.sqlalchemy_url)
    logging.getLogger("tokentree.serve").info("tokentree: serving on http://%s:%s/ (%s); database %s",
                                              host, port, mode, database)
    try:
        app = create_app(settings, dispatcher=worker, session_factory=session_factory)
        # What is loaded by now (torch, transformers, the app) lives as long as the process: out of the
        # collector's sight, full collections while a big tree is read stop walking it (-25% there).
        gc.freeze()
        # log_config=None: uvicorn's loggers go through configure_logging's handler (text or JSON).
        uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), log_config=None,
                    http=with_head_timeout(settings.head_timeout_s),
                    proxy_headers=bool(settings.trusted_proxies),
                    forwarded_allow_ips=settings.trusted_proxies or None)
    finally:
        if worker is not None:
            worker.stop()
        engine.dispose()
    return 0
