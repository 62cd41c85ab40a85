"""The Celery app of the workers: Redis as the broker, one queue per model, one short unit per message.

Delivery is at least once and every effect is idempotent (see workers/tree_jobs.py), so the settings
below aim at "never lose a message" and "never hold one for long":

- acks on receipt: a unit's work lives in Postgres and the Redis frontier, not in its message, so a
  worker that dies mid-unit loses nothing: its nodes' leases expire within seconds and the sweeper
  sends a unit for them (workers/sweeper.py), as it does for a job whose message was lost. (Acking
  late from the pool's threads is not safe: kombu's Redis channel may be reconnecting in the consumer's
  thread, and an ack from another thread then kills the worker.)
- a thread pool of `TOKENTREE_WORKER_UNITS` (32) with prefetch 1: a worker reserves only the messages
  it runs, so the others stay free for idle peers; its units share one model thread, which steps all
  their trees together (workers/batcher.py). Threads also mean no fork after CUDA is touched;
- the visibility timeout (10 minutes by default) covers messages reserved but not yet received;
- no task results: the job's row is the result.
"""

from __future__ import annotations

from celery import Celery

from tokentree.models.settings import get_settings
from tokentree.workers.settings import WorkerSettings


def make_celery() -> Celery:
    settings = get_settings()
    worker = WorkerSettings()
    app = Celery("tokentree", broker=settings.redis_url, include=["tokentree.workers.tasks"])
    app.conf.update(
        task_acks_late=False,
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=False,  # a unit that kills its worker must not loop: attempts count
        worker_prefetch_multiplier=1,
        worker_concurrency=worker.units,
        worker_pool="threads",
        task_ignore_result=True,
        task_default_queue="tokentree.default",
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": worker.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery()
