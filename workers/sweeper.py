"""The safety net under at-least-once delivery: a periodic look at every open job of the models a worker
serves, so that no job stays stuck in running because a message or a worker was lost.

It runs in each worker's heartbeat thread; one worker per model sweeps at a time (a Redis lock). For
each queued or running job it

- takes back the nodes of units whose leases expired (a killed worker) and sends a unit for them at
  once, failing the job if a node was in flight in `max_attempts` dead units (a poison node);
- sends a unit when nothing works on a job that has work (its message was lost, or its frontier was
  lost with a Redis restart and must be rebuilt from Postgres), unless one was sent recently.

Both kinds of job are swept alike: a logprobs job's frontier is its one node (workers/logprobs_jobs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from tokentree.models.jobs import OPEN_STATUSES
from tokentree.models.schema import Job, db_now
from tokentree.workers.frontier import RedisFrontier, Snapshot, job_key
from tokentree.workers.service import Services

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, services: Services, frontier: RedisFrontier, models: list[str],
                 send: Callable[[str, str], None], interval_s: float, stale_after_s: float) -> None:
        self.s = services
        self.frontier = frontier
        self.redis = frontier.redis
        self.models = models
        self.send = send
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s

    def sweep(self) -> None:
        turn_ms = int(self.interval_s * 1000)
        mine = [m for m in self.models
                if self.redis.set(f"tokentree:sweep:{m}", self.s.config.name, nx=True, px=turn_ms)]
        if not mine:
            return
        # A job's first unit may simply not have got to it yet: only an old one is suspect. Its age is
        # read off the database's clock, which wrote its times (this worker's clock may be off).
        old = func.coalesce(Job.started_at, Job.created_at) < db_now() - timedelta(seconds=self.stale_after_s)
        with self.s.session_factory() as session:
            jobs = session.execute(
                select(Job.id, Job.model, old).where(Job.status.in_(OPEN_STATUSES), Job.model.in_(mine))
            ).all()
        snapshots = self.frontier.snapshot([row[0] for row in jobs])
        for (job_id, model, is_old), snap in zip(jobs, snapshots, strict=True):
            try:
                self._sweep_job(str(job_id), model, bool(is_old), snap)
            except Exception:
                log.exception("sweeping job %s failed", job_id)

    def _sweep_job(self, job_id: str, model: str, old: bool, snap: Snapshot) -> None:
        if not snap.ready:
            if old:
                # Its message was lost, or Redis lost its frontier: a unit loads it from Postgres.
                self.kick(job_id, model)
            return
        if snap.units > 0 and snap.expired_units == 0:
            return  # units work on it, all alive
        expired = self.s.take_back(job_id)
        if expired is None:
            return
        if expired.requeued:
            log.warning("job %s: %d nodes of dead units back in the queue", job_id, len(expired.requeued))
            self.kick(job_id, model, urgent=True)
            return
        if expired.live_units > 0:
            return
        self.kick(job_id, model)  # nothing runs on it; the queue has work, or the job needs finishing

    def kick(self, job_id: str, model: str, urgent: bool = False) -> None:
        """Send a unit, unless one was sent recently (urgent: only within the last sweep)."""
        window = self.interval_s if urgent else self.stale_after_s
        if self.redis.exists(job_key(job_id, "sent")) and not urgent:
            return
        if not self.redis.set(job_key(job_id, "kick"), "1", nx=True, px=int(window * 1000)):
            return
        log.info("sweeper sends a unit for job %s", job_id)
        self.send(job_id, model)
