"""`tokentree status`: jobs by status, the Celery queue of each model, the live workers and their models
(from the workers' own heartbeats in Redis, so a busy worker counts), and the queues nobody serves.

In the embedded mode (no TOKENTREE_REDIS_URL) jobs run inside `tokentree serve`: there are no queues
nor separate workers, and the command says so.
"""

from __future__ import annotations

import argparse

from tokentree.cli.common import Parser, check_schema, load_settings, reaching, redacted
from tokentree.cli.errors import UsageError


def add_command(commands: argparse._SubParsersAction[Parser]) -> None:
    status = commands.add_parser("status", help="jobs by status, queue lengths per model, workers alive")
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    from tokentree.models import jobs
    from tokentree.models.db import engine_from_settings, make_session_factory

    settings = load_settings()
    check_schema(settings)  # creates the embedded file if need be; a shared database must be current
    engine = engine_from_settings(settings)
    try:
        with reaching(settings.sqlalchemy_url), make_session_factory(engine)() as session:
            counts = jobs.count_by_status(session)
    finally:
        engine.dispose()
    print(f"database {redacted(settings.sqlalchemy_url)}")
    print("jobs: " + ", ".join(f"{status} {count}" for status, count in counts.items()))
    if settings.redis_url is None:
        print("mode: embedded (jobs run inside `tokentree serve`; no queues and no separate workers)")
        return 0
    _broker_status(settings.redis_url, list(settings.models))
    return 0


def _broker_status(redis_url: str, models: list[str]) -> None:
    import time

    import redis

    from tokentree.models.queues import model_queue
    from tokentree.models.worker_registry import live_workers, unserved

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        lengths = [int(client.llen(model_queue(model))) for model in models]
        workers = live_workers(client)
    except redis.RedisError as exc:
        raise UsageError(f"cannot reach the broker {redis_url.split('@')[-1]}: {exc}") from None
    finally:
        client.close()
    print("queues: " + ", ".join(f"{model_queue(model)} {length}"
                                 for model, length in zip(models, lengths, strict=True)))
    now = time.time()
    print(f"workers alive: {len(workers)}" + ("" if workers else " (no worker heartbeat in Redis)"))
    for worker in workers:
        print(f"  {worker.describe(now)}")
    nobody = unserved(models, workers)
    if nobody:
        print("queues no live worker serves: " + ", ".join(model_queue(model) for model in nobody))
