"""A score job: the text it holds scored token by token as the continuation of its prompt
(`engine.score.score_text`). It runs as one piece, as a logprobs job does (`run_record_unit`)."""

from __future__ import annotations

from tokentree.engine.params import ParameterError, ScoreParams
from tokentree.engine.score import score_text
from tokentree.models.schema import Job
from tokentree.workers.logprobs_jobs import MakeRecord, run_record_unit
from tokentree.workers.service import Outcome, Services


def run_score_unit(s: Services, job: Job) -> Outcome:
    """One unit of work on a score job: all of it."""
    return run_record_unit(s, job, _prepare)


def _prepare(job: Job) -> MakeRecord:
    params = ScoreParams.from_dict(dict(job.parameters))
    if job.text is None:
        raise ParameterError("text", "a score job needs the text to score")
    text = job.text
    return lambda lm: score_text(lm, job.prompt, text, params, chat=job.chat, prefix=job.prefix)
