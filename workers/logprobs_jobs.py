"""A logprobs job runs as one piece (a greedy generation cannot be split), and so does a score job
(workers/score_jobs.py): its frontier is one node, the job itself (`JOB_NODE`), leased like a tree's
nodes, and its result is one record (`run_record_unit`, shared by both kinds). A redelivered message
finds the node held and leaves; a dead worker's lease expires and the node goes back to the queue for
the next unit, counting an attempt, and a job taken back `max_attempts` times fails instead of killing
worker after worker.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from tokentree.engine.analysis import analyze_logprobs
from tokentree.engine.loading import LoadedModel, ModelLoadError
from tokentree.engine.params import LogprobsParams, ParameterError
from tokentree.models.jobs import finish_job, mark_running
from tokentree.models.schema import Job
from tokentree.workers.service import JOB_NODE, Outcome, Services

log = logging.getLogger(__name__)

# A job's record from the model. Made from the job before the model is loaded, so that its parameters are
# checked first (a ParameterError fails the job).
MakeRecord = Callable[[LoadedModel], dict[str, Any]]


def run_logprobs_unit(s: Services, job: Job) -> Outcome:
    """One unit of work on a logprobs job: all of it."""

    def prepare(job: Job) -> MakeRecord:
        params = LogprobsParams.from_dict(dict(job.parameters))
        return lambda lm: analyze_logprobs(lm, job.prompt, params, chat=job.chat, prefix=job.prefix)

    return run_record_unit(s, job, prepare)


def run_record_unit(s: Services, job: Job, prepare: Callable[[Job], MakeRecord]) -> Outcome:
    """One unit of work on a job that runs as one piece and ends in one record (`prepare(job)` makes it):
    all of it. The record is the job's `result["record"]`."""
    job_id, unit = str(job.id), s.new_unit()
    try:
        make_record = prepare(job)
        lm = s.models.get(job.model)
    except (ParameterError, ModelLoadError) as exc:
        s.fail(job_id, str(exc))
        return Outcome.DONE
    if s.refuses(job_id, lm):
        return Outcome.IDLE
    with s.session_factory() as session:
        if not mark_running(session, job_id, s.config.name):
            return Outcome.DONE
    if (ended := s.open_frontier(job_id, unit, lambda: [JOB_NODE])) is not None:
        return ended
    if not s.frontier.lease(job_id, unit, 1, s.config.lease_ttl_s).node_ids:
        return Outcome.IDLE  # a live unit has it
    with s.hold(job_id, unit):
        s.frontier.mark_in_flight(job_id, unit, [JOB_NODE])  # the model runs on it from now on
        try:
            record = make_record(lm)
        except ParameterError as exc:
            s.fail(job_id, str(exc))
            return Outcome.DONE
        except Exception:
            log.exception("%s job %s failed", job.kind, job_id)
            attempts = s.frontier.release(job_id, unit, [JOB_NODE], end_unit=True, failed=True)
            if attempts >= s.config.max_attempts:
                s.fail(job_id, f"failed {attempts} times; the last error:\n{traceback.format_exc()}")
                return Outcome.DONE
            return Outcome.CONTINUE
    record["metadata"]["model"] = job.model  # the allow-list name, as the job has it
    with s.session_factory() as session:
        finish_job(session, job_id, "succeeded", result={"record": record})
    s.frontier.clear(job_id)  # nothing of a finished job stays in Redis
    return Outcome.DONE
