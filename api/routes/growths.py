"""/v1/jobs/{id}/expand: grow an ended tree job in place (models/growths.py), and send it to the workers
again exactly as a submission is sent (`api.dispatch.send_committed`).

The caller must be able to read the job (another key's job is a 404, as on every job route). Refusals:
a job of another kind, one still queued or running, or one grown TOKENTREE_MAX_GROWTHS_PER_JOB times
(409); a key at its quota of open jobs (429, as a submission: the job is open again); a node not in the
job, a token not among the node's recorded candidates or a child already, a "more" on a node that is
not an unexpanded leaf, bad parameters (422 naming the field).
"""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, Depends, HTTPException, Request, status

from tokentree.api.auth import CallerDep
from tokentree.api.deps import DispatcherDep, ReleasesSession, SessionDep, SettingsDep
from tokentree.api.dispatch import send_committed
from tokentree.api.limits import enforce_rate_limit
from tokentree.api.routes.jobs import (
    REFUSALS,
    _job_or_404,
    _job_out,
    _require_kind,
    _warnings,
    enforce_active_jobs_quota,
)
from tokentree.api.schemas import GrowthCreate, JobOut
from tokentree.api.validation import reject, validate_parameters
from tokentree.engine.growth import GrowthRefused
from tokentree.models import growths

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=ReleasesSession,
                   dependencies=[Depends(enforce_rate_limit)], responses=REFUSALS)


@router.post("/{job_id}/expand")
def expand_job(job_id: uuid.UUID, body: GrowthCreate, request: Request, session: SessionDep,
               settings: SettingsDep, dispatcher: DispatcherDep, caller: CallerDep) -> JobOut:
    """Grow an ended tree job in place: the node's recorded candidate `token_id` becomes a new child (its
    probabilities absolute: the candidate's, times its parent's cumulative) and grows by the rule; without
    `token_id`, the node itself (a leaf a limit left unexpanded) grows further. The job is queued and runs
    again; its growth is recorded in `growths` (and the tree's metadata)."""
    job = _job_or_404(session, job_id, caller)
    _require_kind(job, "tree")
    parameters = validate_parameters("tree", {**job.parameters, **(body.parameters or {})}, settings)
    enforce_active_jobs_quota(session, settings, caller, request)  # the job is open again: it counts
    try:
        job = growths.start_growth(session, job.id, node_id=body.node_id, token_id=body.token_id,
                                   parameters=parameters, by=caller.key_id,
                                   max_growths=settings.max_growths_per_job)
    except growths.JobGone as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except growths.GrowthConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except GrowthRefused as exc:
        reject(("body", exc.field), exc.message, getattr(body, exc.field, None))
    # A finished tree may be kept rendered: this one changes now.
    request.app.state.rendered_trees.forget(job.id)
    log.info("job growing: node %s, token %s", body.node_id, body.token_id)
    send_committed(session, dispatcher, [job])
    return _job_out(session, job, _warnings(request))
