"""A tree job's growths in place (`POST /v1/jobs/{id}/expand`): the storage side of engine/growth.py.

A growth re-opens an ended tree job at one node, in one transaction under the job's row lock: the
candidate made a child (its probabilities absolute: `engine.growth.candidate_child`), or the leaf made
open again ("this node, more"); the growth recorded in `jobs.growths` (who, when on the database's
clock, which node, token and parameters, the counts before); and the job queued again. Its workers then
run the job's last growth (`job_growth`): the rule's limits counted from where the growth starts
(`GrowthRecord.rule_params`), and its frontier only the growth's own open nodes (`growth_open_node_ids`),
so nodes a limit left open elsewhere in the tree stay as they were and the growth is the rule run from
its start node alone. When the job ends, `record_growth_end` adds the counts after.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any, cast

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.orm import Session

from tokentree.engine.growth import GrowthRecord, GrowthRefused, candidate_child, check_more
from tokentree.engine.tree import unexplored_mass
from tokentree.models.jobs import OPEN_STATUSES, JobId, add_counts, as_job_id
from tokentree.models.node_writes import storable_text
from tokentree.models.schema import Job, NodeRow, db_now

NODES = cast(Table, NodeRow.__table__)


class GrowthConflict(Exception):
    """The job cannot grow now: not a tree job, still queued or running, or grown the most times allowed."""


class JobGone(LookupError):
    """No such job."""


def job_growth(job: Job) -> GrowthRecord | None:
    """The growth a queued or running tree job runs: its last one (a job runs again only to grow)."""
    return GrowthRecord.from_json(job.growths[-1]) if job.growths else None


def start_growth(session: Session, job_id: JobId, *, node_id: int, token_id: int | None,
                 parameters: dict[str, Any], by: str | None, max_growths: int) -> Job:
    """Grow the ended tree job at `node_id` (its candidate `token_id`; None: the leaf itself) with the
    rule's complete `parameters`, and queue it: one transaction, committed. Raises JobGone,
    GrowthConflict, or GrowthRefused naming node_id or token_id; nothing is written then."""
    key = as_job_id(job_id)
    try:
        job = session.scalar(select(Job).where(Job.id == key).with_for_update()
                             .execution_options(populate_existing=True))
        if job is None:
            raise JobGone(f"job {key} not found")
        _check_job(job, max_growths)
        node = session.execute(
            select(NodeRow.depth, NodeRow.cumulative_prob, NodeRow.candidates, NodeRow.threshold.is_not(None),
                   NodeRow.finish_reason, NodeRow.unexplored_mass)
            .where(NodeRow.job_id == key, NodeRow.id == node_id)
        ).one_or_none()
        if node is None:
            raise GrowthRefused("node_id", f"node {node_id} is not in job {key}")
        depth, cumulative, candidates, expanded, finish_reason, unexplored = node
        last_node_before = session.scalar(select(func.max(NodeRow.id)).where(NodeRow.job_id == key)) or 0
        if token_id is None:
            check_more(expanded, finish_reason)
            session.execute(update(NODES).where(NODES.c.id == node_id)
                            .values(is_finished=False, finish_reason=None))
            start_id, start_depth, prob_source = node_id, depth, None
        else:
            children = session.scalars(select(NodeRow.token_id)
                                       .where(NodeRow.job_id == key, NodeRow.parent_id == node_id)).all()
            child = candidate_child(json.loads(candidates or "[]"), token_id, children, cumulative, depth)
            start_id = session.scalar(insert(NODES).values(
                job_id=key, parent_id=node_id, token_id=token_id, text=storable_text(child.text),
                depth=child.depth, prob=child.prob, logprob=child.logprob,
                cumulative_prob=child.cumulative_prob, raw_prob=child.raw_prob, raw_logprob=child.raw_logprob,
                token_bytes=child.token_bytes,
                is_finished=False, created_at=db_now(),
            ).returning(NODES.c.id))
            if unexplored is not None:  # the parent's children now leave out less
                session.execute(update(NODES).where(NODES.c.id == node_id).values(
                    unexplored_mass=unexplored_mass([1.0 - unexplored, child.prob])))
            add_counts(session, key, nodes=1)
            start_depth, prob_source = child.depth, child.prob_source
        record = GrowthRecord(
            node_id=node_id, token_id=token_id, parameters=parameters, by=by, at=_db_time(session),
            nodes_before=job.node_count, completed_before=job.completed_paths, start_node_id=int(start_id),
            start_depth=start_depth, last_node_before=int(last_node_before), prob_source=prob_source)
        job.growths = [*(job.growths or []), record.to_json()]
        job.status, job.finished_at, job.error = "queued", None, None
        session.commit()
        return job
    except BaseException:
        session.rollback()
        raise


def _check_job(job: Job, max_growths: int) -> None:
    if job.kind != "tree":
        raise GrowthConflict(f"job {job.id} is a {job.kind} job; only tree jobs grow")
    if job.status in OPEN_STATUSES:
        raise GrowthConflict(f"job {job.id} is still {job.status}; grow it once it has ended")
    if len(job.growths or []) >= max_growths:
        raise GrowthConflict(f"job {job.id} has grown {len(job.growths or [])} times, the most allowed here "
                             "(TOKENTREE_MAX_GROWTHS_PER_JOB)")


def _db_time(session: Session) -> str:
    """The database's clock now, in ISO 8601 (UTC)."""
    now = session.scalar(select(db_now()))
    assert now is not None
    return (now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)).isoformat()


def growth_open_node_ids(session: Session, job_id: JobId, growth: GrowthRecord) -> list[int]:
    """The growth's open nodes, in queue order (by depth, then id): its start node and the nodes made
    since it began, never the nodes a limit left open elsewhere before it."""
    query = select(NodeRow.id).where(
        NodeRow.job_id == as_job_id(job_id), NodeRow.threshold.is_(None), NodeRow.is_finished.is_(False),
        or_(NodeRow.id > growth.last_node_before, NodeRow.id == growth.start_node_id))
    return list(session.scalars(query.order_by(NodeRow.depth, NodeRow.id)))


def record_growth_end(session: Session, job_id: JobId, nodes: int, completed_paths: int) -> None:
    """Add the tree's counts after to the job's last growth (a tree job that never grew: nothing). Does
    not commit: call it in the transaction that finishes the job."""
    key = as_job_id(job_id)
    growths = session.scalar(select(Job.growths).where(Job.id == key).with_for_update())
    if not growths:
        return
    last = {**growths[-1], "nodes_after": nodes, "completed_after": completed_paths}
    session.execute(update(Job).where(Job.id == key).values(growths=[*growths[:-1], last])
                    .execution_options(synchronize_session=False))
