"""The embedded mode's worker: one thread in the API's process, one job at a time, the same units of
work as a Celery worker, with the frontier in memory instead of Redis.

Nothing is shared with other processes, so a unit never needs to end early to let a peer in: it runs
the whole job and writes nodes as they are produced (a cancelled job stops at its next write).
Jobs left queued or running by a previous process are picked up again on start, from the database.
"""

from __future__ import annotations

import logging
import queue
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tokentree.models.jobs import OPEN_STATUSES
from tokentree.models.schema import Job
from tokentree.models.settings import Settings
from tokentree.workers.frontier import MemoryFrontier
from tokentree.workers.service import ModelRegistry, Outcome, Services
from tokentree.workers.settings import WorkerSettings
from tokentree.workers.units import run_unit

log = logging.getLogger(__name__)

# With no peers to share with, one unit holds the whole frontier (so every tree is the CLI's); with no
# other work waiting for its thread (`Services.work_waiting`), it runs until the job is done.
LOCAL_HOLD_LIMIT = 10_000_000


class LocalWorker:
    """`submit` / `cancel` as the API's dispatcher expects; `start` / `stop` for the server's lifetime."""

    def __init__(
        self, settings: Settings, session_factory: sessionmaker[Session], name: str = "local"
    ) -> None:
        self.frontier = MemoryFrontier()
        self.services = Services(
            config=WorkerSettings(name=name, hold_limit=LOCAL_HOLD_LIMIT),
            max_batch=settings.max_batch,
            session_factory=session_factory,
            frontier=self.frontier,
            models=ModelRegistry(settings),
        )
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tokentree-local-worker", daemon=True)

    def start(self) -> None:
        """Start the thread, and queue the jobs a previous process left unfinished (oldest first)."""
        with self.services.session_factory() as session:
            left = session.scalars(
                select(Job.id).where(Job.status.in_(OPEN_STATUSES)).order_by(Job.created_at)
            ).all()
        for job_id in left:
            self._queue.put(str(job_id))
        self._thread.start()

    def submit(self, job_id: str, model: str) -> None:
        self._queue.put(str(job_id))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current batch; an unfinished job resumes when a worker starts again."""
        self.services.stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Whether no job waits or runs (for tests and a graceful shutdown)."""
        return self._queue.unfinished_tasks == 0

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                if job_id is None or self.services.stopping.is_set():
                    return
                self._run_job(job_id)
            except Exception:
                log.exception("job %s: the local worker failed", job_id)
            finally:
                self._queue.task_done()

    def _run_job(self, job_id: str) -> None:
        while not self.services.stopping.is_set():
            outcome, _ = run_unit(self.services, job_id)
            if outcome is not Outcome.CONTINUE:
                return
