"""How the API hands a committed job to the workers.

The API never imports `workers/`: in the distributed mode it sends tasks by name through Celery; in
the embedded mode `tokentree serve` passes in the in-process worker, which has the same method.
Stopping needs no message: a cancelled job's status is committed, and every worker on it reads that
status when it writes its next step (under the job's row lock) and stops there.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from models.queues import RUN_JOB_TASK, model_queue


class Dispatcher(Protocol):
    """Starts and stops the work on jobs. Called only after the job's row is committed."""

    def submit(self, job_id: str, model: str) -> None:
        """Queue the job for the workers that serve `model`."""


class CeleryDispatcher:
    """The distributed mode: a task per job on its model's queue."""

    def __init__(self, redis_url: str) -> None:
        self.celery = Celery("tokentree-api", broker=redis_url, set_as_current=False)
        # Fail a request in seconds, not minutes, when the broker is down (refused connections) or hung
        # (connections accepted, nothing answered: without a socket timeout a publish waits forever).
        self.celery.conf.update(
            broker_connection_timeout=5,
            broker_transport_options={"socket_timeout": 1, "socket_connect_timeout": 1},
            task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5,
                                       "interval_max": 0.5},
        )

    def submit(self, job_id: str, model: str) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[job_id], queue=model_queue(model))

    def close(self) -> None:
        self.celery.close()
