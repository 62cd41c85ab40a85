"""A unit of work on a job, of the job's kind: what a Celery task runs, and the embedded worker too."""

from __future__ import annotations

from workers.logprobs_jobs import LogprobsJobs
from workers.service import Outcome, Services
from workers.tree_jobs import TreeJobs


class Units:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.kinds: dict[str, TreeJobs | LogprobsJobs] = {"tree": TreeJobs(services),
                                                          "logprobs": LogprobsJobs(services)}

    def run(self, job_id: str) -> tuple[Outcome, str | None]:
        """One unit of work on the job; its outcome and the job's model (None when the job is gone)."""
        with self.s.session_factory() as session:
            job = self.s.job_to_run(session, job_id)
        if job is None:
            return Outcome.DONE, None
        return self.kinds[job.kind].run_unit(job), job.model
