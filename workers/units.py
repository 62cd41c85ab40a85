"""A unit of work on a job, of the job's kind: what a Celery task runs, and the embedded worker too."""

from __future__ import annotations

from tokentree.models.jobs import get_job
from tokentree.models.schema import TERMINAL_STATUSES
from tokentree.workers.logprobs_jobs import run_logprobs_unit
from tokentree.workers.score_jobs import run_score_unit
from tokentree.workers.service import Outcome, Services
from tokentree.workers.tree_jobs import run_tree_unit

KINDS = {"tree": run_tree_unit, "logprobs": run_logprobs_unit, "score": run_score_unit}


def run_unit(s: Services, job_id: str) -> tuple[Outcome, str | None]:
    """One unit of work on the job; its outcome and the job's model (None when there is nothing to do on
    it: it is gone or ended, and whatever Redis still keeps of it is cleared)."""
    with s.session_factory() as session:
        job = get_job(session, job_id)
    if job is None or job.status in TERMINAL_STATUSES:
        s.frontier.clear(job_id)
        return Outcome.DONE, None
    return KINDS[job.kind](s, job), job.model
