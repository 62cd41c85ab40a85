"""/v1/compare: two finished tree jobs of the same prompt, lined up (engine/compare.py).

The caller must be able to read both jobs (the same checks as /v1/jobs/{id}: another key's job is a
404). Both trees are read as engine nodes straight from their rows, never rendered to JSON and parsed
back; only the candidates of nodes both trees expanded are parsed. Each tree may hold at most
TOKENTREE_COMPARE_MAX_NODES nodes, and a comparison takes one of the caller's tree-render slots.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from sqlalchemy.orm import Session

from tokentree.api.auth import Caller, CallerDep
from tokentree.api.deps import ReleasesSession, SessionDep, SettingsDep
from tokentree.api.limits import CallerSlots, enforce_rate_limit
from tokentree.api.routes.jobs import REFUSALS, _job_or_404, _require_kind
from tokentree.api.validation import reject
from tokentree.engine.compare import NotComparable, compare_trees
from tokentree.models import node_reads
from tokentree.models.schema import TERMINAL_STATUSES, Job

router = APIRouter(prefix="/v1", tags=["compare"], route_class=ReleasesSession,
                   dependencies=[Depends(enforce_rate_limit)], responses=REFUSALS)
# Disagreements in one answer at most (each carries two candidate lists).
MAX_TOP = 10_000
JOB_ID = "the id of a finished tree job the caller may read"


def _comparable_job(session: Session, job_id: uuid.UUID, caller: Caller, field: str, max_nodes: int) -> Job:
    job = _job_or_404(session, job_id, caller)
    _require_kind(job, "tree")
    if job.status not in TERMINAL_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"job {job.id} is {job.status}: compare its tree once the job has ended")
    if job.node_count > max_nodes:
        reject(("query", field), f"job {job.id} has {job.node_count} nodes, more than the {max_nodes} a "
                                 "comparison reads (TOKENTREE_COMPARE_MAX_NODES)", str(job_id))
    return job


@router.get("/compare")
def compare_jobs(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    a: Annotated[uuid.UUID, Query(description=JOB_ID)],
    b: Annotated[uuid.UUID, Query(description=JOB_ID + ", of the same prompt text")],
    top: Annotated[int, Query(ge=0, le=MAX_TOP, description="disagreements to list, largest first")] = 100,
) -> dict[str, Any]:
    """Line up the trees of jobs `a` and `b` by token path: nodes shared and only in one tree, where the
    two most probable paths part, and at every node both expanded the total variation distance between
    the two next-token distributions over their recorded candidates (each side's unrecorded rest as one
    "other" bucket), largest first. Trees of different prompt texts are refused (422)."""
    job_a = _comparable_job(session, a, caller, "a", settings.compare_max_nodes)
    job_b = _comparable_job(session, b, caller, "b", settings.compare_max_nodes)
    slots: CallerSlots = request.app.state.render_slots
    free_slot = slots.take(caller)
    try:
        trees = []
        for job, field in ((job_a, "a"), (job_b, "b")):
            nodes = node_reads.load_tree_nodes(session, job.id)
            if not nodes:
                raise HTTPException(status.HTTP_409_CONFLICT, f"job {job.id} ({field}) has no tree: it ended "
                                                              f"{job.status} before its first node")
            trees.append((nodes, node_reads.tree_metadata(job)))
        session.close()  # the rows are read: the connection goes back before the comparison runs
        (nodes_a, metadata_a), (nodes_b, metadata_b) = trees
        try:
            comparison = compare_trees(nodes_a, metadata_a, nodes_b, metadata_b)
        except NotComparable as exc:
            reject(("query", "b"), str(exc), str(b))
    finally:
        free_slot()
    report = comparison.to_json(top=top)
    report["a"]["job"], report["b"]["job"] = str(job_a.id), str(job_b.id)
    return report
