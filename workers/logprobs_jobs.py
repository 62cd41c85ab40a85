"""A logprobs job runs as one piece (a greedy generation cannot be split), under a claim on the whole
job: a redelivered message finds the claim held and leaves, a dead worker's claim expires and the next
unit takes the job over, and a job whose claim was taken `max_attempts` times without finishing fails
instead of killing worker after worker.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback

from engine.analysis import analyze_logprobs
from engine.loading import ModelLoadError
from engine.params import LogprobsParams, ParameterError
from models.jobs import finish_job, mark_running
from models.schema import Job
from workers.service import Outcome, Services

log = logging.getLogger(__name__)


def logprobs_params(values: dict[str, object]) -> LogprobsParams:
    known = {f.name for f in dataclasses.fields(LogprobsParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParameterError(unknown[0], f"unknown parameter; expected one of {', '.join(sorted(known))}")
    return LogprobsParams(**values)  # type: ignore[arg-type]


class LogprobsJobs:
    def __init__(self, services: Services) -> None:
        self.s = services

    def run_unit(self, job: Job) -> Outcome:
        s = self.s
        job_id, unit = str(job.id), s.new_unit()
        attempt = s.frontier.claim(job_id, unit, s.config.lease_ttl_s)
        if attempt is None:
            return Outcome.IDLE  # a live unit has it
        try:
            if attempt > s.config.max_attempts:
                s.fail(job_id, f"the job was started {attempt - 1} times and never finished "
                               "(did it crash its workers? out of memory?)")
                return Outcome.DONE
            try:
                params = logprobs_params(dict(job.parameters))
                lm = s.models.get(job.model)
            except (ParameterError, ModelLoadError) as exc:
                s.fail(job_id, str(exc))
                return Outcome.DONE
            with s.session_factory() as session:
                if not mark_running(session, job_id, s.config.name):
                    return Outcome.DONE
            with s.keeper.hold(job_id, unit, "claim"):
                try:
                    record = analyze_logprobs(lm, job.prompt, params, chat=job.chat, prefix=job.prefix)
                except ParameterError as exc:
                    s.fail(job_id, str(exc))
                    return Outcome.DONE
                except Exception:
                    log.exception("logprobs job %s failed (attempt %d)", job_id, attempt)
                    if attempt >= s.config.max_attempts:
                        s.fail(job_id, traceback.format_exc())
                        return Outcome.DONE
                    return Outcome.CONTINUE
            record["metadata"]["model"] = job.model  # the allow-list name, as the job has it
            with s.session_factory() as session:
                finish_job(session, job_id, "succeeded", result={"record": record})
            s.frontier.clear(job_id)  # the claim and its count: nothing of a finished job stays in Redis
            return Outcome.DONE
        finally:
            s.frontier.drop_claim(job_id, unit)
