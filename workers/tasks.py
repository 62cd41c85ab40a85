"""The task: `tokentree.run_job(job_id)` runs one unit of work on the job and hands it on.

Tasks carry ids only; what to do is read from Postgres and Redis. The process's runtime is built on
the first task (or when the worker is ready, see the signal handlers below), never before a fork.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from celery import signals

from tokentree.models import worker_registry
from tokentree.models.queues import RUN_JOB_TASK
from tokentree.models.settings import get_settings
from tokentree.models.worker_registry import WorkerBeat
from tokentree.workers.app import app
from tokentree.workers.frontier import worker_redis
from tokentree.workers.runtime import WorkerRuntime, first_line
from tokentree.workers.settings import WorkerSettings

log = logging.getLogger(__name__)

_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()
_claimed: WorkerBeat | None = None  # this worker's name, taken when the process started


def send_run_job(job_id: str, queue: str) -> None:
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


def get_runtime() -> WorkerRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime(send=send_run_job, beat=_claimed)
            _runtime.start()
        return _runtime


@app.task(name=RUN_JOB_TASK, acks_late=False, ignore_result=True)
def run_job(job_id: str) -> str:
    """One unit of work on the job (a short, bounded run); sends the next unit if the job needs one."""
    return get_runtime().run(str(job_id)).value


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    """Take the worker's name before Celery consumes anything: a live worker with the same name makes
    this one exit at once, with one line and status 2."""
    global _claimed
    settings, worker = get_settings(), WorkerSettings()
    beat = WorkerBeat(name=worker.name, models=tuple(worker.served_models(settings.models)))
    client = worker_redis(str(settings.redis_url))
    try:
        worker_registry.claim(client, beat, worker.startup_ttl_s)
    except worker_registry.NameTaken as exc:
        print(f"tokentree: error: {exc}", file=sys.stderr, flush=True)
        os._exit(2)  # nothing is started yet: no connection, no model, no writer process
    except Exception as exc:
        log.warning("worker %s: cannot claim its name in Redis (%s); it does so when it starts", worker.name,
                    first_line(exc))
        return
    finally:
        client.close()
    _claimed = beat


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    runtime = get_runtime()
    if runtime.config.preload:
        runtime.preload()
    runtime.mark_ready()
    log.info("worker %s serves %s", runtime.services.config.name, ", ".join(runtime.models))


@signals.task_prerun.connect
def _on_task_start(**_: Any) -> None:
    if _runtime is not None:
        _runtime.heartbeat.unit_started()


@signals.task_postrun.connect
def _on_task_end(**_: Any) -> None:
    if _runtime is not None:
        _runtime.heartbeat.unit_ended()


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    # Units end at their next step and give their nodes back, so a warm shutdown is prompt.
    if _runtime is not None:
        _runtime.services.stopping.set()
        _runtime.ready = False


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    if _runtime is not None:
        _runtime.heartbeat.refresh_idle()  # no longer idle: peers must not hand it work
        _runtime.close()
