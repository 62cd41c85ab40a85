"""How the API hands a committed job to the workers.

The API never imports `workers/`: in the distributed mode it sends tasks by name through Celery; in
the embedded mode `tokentree serve` passes in the in-process worker, which has the same method.
Stopping needs no message: a cancelled job's status is committed, and every worker on it reads that
status when it writes its next step (under the job's row lock) and stops there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from celery import Celery
from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from tokentree.models import jobs
from tokentree.models.queues import RUN_JOB_TASK, model_queue
from tokentree.models.schema import Job

log = logging.getLogger(__name__)


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


def send_committed(session: Session, dispatcher: Dispatcher, committed: Sequence[Job]) -> None:
    """Send the tasks of committed jobs, in order. A queue that refuses one (the broker down or hung) is
    a 503; that job and every one not yet sent fail, visibly, since without a task a committed job would
    wait forever (the ones already sent run)."""
    for index, job in enumerate(committed):
        try:
            dispatcher.submit(str(job.id), job.model)
        except Exception as exc:
            log.exception("could not queue job %s", job.id)
            for unsent in committed[index:]:
                jobs.finish_job(session, unsent.id, "failed", error=f"could not queue the job: {exc}")
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the job queue is unavailable") from exc
