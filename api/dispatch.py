"""How the API hands a committed job to the workers, and tells them to stop.

The API never imports `workers/`: in the distributed mode it sends tasks by name through Celery; in
the embedded mode `tokentree serve` passes in the in-process worker, which has the same two methods.
"""

from __future__ import annotations

from typing import Protocol

import redis
from celery import Celery

from models.jobs import cancel_flag_key
from models.queues import RUN_JOB_TASK, model_queue


class Dispatcher(Protocol):
    """Starts and stops the work on jobs. Called only after the job's row is committed."""

    def submit(self, job_id: str, model: str) -> None:
        """Queue the job for the workers that serve `model`."""

    def cancel(self, job_id: str) -> None:
        """Make every worker on the job stop promptly (the job is already cancelled in the database)."""


class CeleryDispatcher:
    """The distributed mode: a task per job on its model's queue, and a Redis flag to cancel it."""

    def __init__(self, redis_url: str, cancel_ttl_s: int) -> None:
        self.celery = Celery("tokentree-api", broker=redis_url, set_as_current=False)
        # Fail a request in seconds, not minutes, when the broker is down.
        self.celery.conf.update(
            broker_connection_timeout=5,
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                                       "interval_max": 1},
        )
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.cancel_ttl_s = cancel_ttl_s

    def submit(self, job_id: str, model: str) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[job_id], queue=model_queue(model))

    def cancel(self, job_id: str) -> None:
        self.redis.set(cancel_flag_key(job_id), "1", ex=self.cancel_ttl_s)

    def close(self) -> None:
        self.celery.close()
        self.redis.close()
