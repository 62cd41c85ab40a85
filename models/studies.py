"""The study repository: every query on the `studies` table, and on the jobs and nodes of a study.

A study is many jobs asked as one question: every combination of its prompts, models and parameter sets.
Its jobs are ordinary jobs (`jobs.study_id` names the study): workers run them as any other. The study
and all its jobs are committed in one transaction, so no task is sent for a study half made, and a study
is never seen with some of its jobs missing. Reads over a whole study (its progress, its fork points)
are aggregates computed by the database, never whole trees loaded here.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from tokentree.engine.tree import response_text
from tokentree.models.jobs import JOBS, OPEN_STATUSES, _rowcount, new_job
from tokentree.models.node_reads import path_steps
from tokentree.models.schema import JOB_STATUSES, Job, NodeRow, Study, db_now

ForkRanking = Literal["entropy", "branches", "unexplored_mass"]
FORK_RANKINGS: tuple[ForkRanking, ...] = ("entropy", "branches", "unexplored_mass")
# The node columns of an export, in its column order (the job's own columns come first).
EXPORT_NODE_COLUMNS = (
    NodeRow.id, NodeRow.parent_id, NodeRow.token_id, NodeRow.text, NodeRow.depth, NodeRow.prob,
    NodeRow.logprob, NodeRow.cumulative_prob, NodeRow.raw_prob, NodeRow.raw_logprob, NodeRow.is_finished,
    NodeRow.finish_reason, NodeRow.threshold, NodeRow.queue_depth, NodeRow.entropy, NodeRow.unexplored_mass,
    NodeRow.candidates,
)
EXPORT_NODE_NAMES = ("node_id", *(column.key for column in EXPORT_NODE_COLUMNS[1:]))
EXPORT_BATCH_ROWS = 5_000


@dataclass(frozen=True)
class StudyJob:
    """One combination of a study: what its job is asked."""

    prompt: str
    model: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class StudyProgress:
    """A study's jobs together: how many in each status, and their nodes and completed paths."""

    jobs: int
    by_status: dict[str, int]
    nodes: int
    completed_paths: int

    @property
    def done(self) -> bool:
        """Every job has ended (succeeded, failed or cancelled)."""
        return all(self.by_status[status] == 0 for status in OPEN_STATUSES)


@dataclass(frozen=True)
class Fork:
    """An expanded node with more than one child: where a tree of the study branched."""

    node_id: int
    job_id: uuid.UUID
    depth: int
    prob: float
    cumulative_prob: float
    entropy: float | None
    branches: int
    unexplored_mass: float  # 1 - the children's probabilities: what the tree left unexplored there
    candidates: str  # the JSON text the tree shows
    path_text: str = ""  # after the prompt: the job's prefix, then the tokens down to the node


# -- create and read --------------------------------------------------------------------------------


def create_study(
    session: Session,
    *,
    name: str,
    request: dict[str, Any],
    kind: str,
    combinations: Sequence[StudyJob],
    chat: bool = False,
    prefix: str | None = None,
    owner: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Study, list[Job]]:
    """Insert the study and a queued job per combination, in their order, and commit them together
    (their tasks may only be sent after this returns). An `idempotency_key` (scoped:
    `models.jobs.idempotency_scope`) another study has raises IntegrityError, and nothing is stored."""
    study = Study(id=uuid.uuid4(), name=name, owner=owner, request=request, idempotency_key=idempotency_key)
    session.add(study)
    session.flush()  # the study's row before its jobs' (their foreign key)
    made = [new_job(kind=kind, prompt=combination.prompt, model=combination.model,
                    parameters=combination.parameters, chat=chat, prefix=prefix, owner=owner,
                    study_id=study.id)
            for combination in combinations]
    session.add_all(made)
    session.commit()
    return study, made


def get_study(session: Session, study_id: uuid.UUID) -> Study | None:
    return session.get(Study, study_id, populate_existing=True)


def study_by_idempotency_key(session: Session, scoped_key: str) -> Study | None:
    return session.scalar(select(Study).where(Study.idempotency_key == scoped_key))


def list_studies(
    session: Session, *, limit: int = 50, offset: int = 0, owner: str | None = None
) -> tuple[list[Study], int]:
    """A page of studies, newest first, optionally only `owner`'s; and how many there are in all."""
    query = select(Study)
    count = select(func.count()).select_from(Study)
    if owner is not None:
        query = query.where(Study.owner == owner)
        count = count.where(Study.owner == owner)
    page = session.scalars(query.order_by(Study.created_at.desc(), Study.id.desc())
                           .limit(limit).offset(offset))
    return list(page), session.scalar(count) or 0


def study_jobs(session: Session, study_id: uuid.UUID) -> list[Job]:
    """The study's jobs, in the order they were made (the order of its combinations)."""
    return list(session.scalars(
        select(Job).where(Job.study_id == study_id).order_by(Job.created_at, Job.id)
        .execution_options(populate_existing=True)))


def studies_progress(session: Session, study_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StudyProgress]:
    """Each study's `StudyProgress`, from the counts kept with its jobs, in one query (no nodes read)."""
    found: dict[uuid.UUID, dict[str, tuple[int, int, int]]] = {study_id: {} for study_id in study_ids}
    if not study_ids:
        return {}
    rows = session.execute(
        select(Job.study_id, Job.status, func.count(), func.sum(Job.node_count),
               func.sum(Job.completed_paths))
        .where(Job.study_id.in_(study_ids))
        .group_by(Job.study_id, Job.status)
    )
    for study_id, status, count, nodes, completed in rows:
        found[typing.cast(uuid.UUID, study_id)][status] = (count, nodes or 0, completed or 0)
    return {
        study_id: StudyProgress(
            jobs=sum(count for count, _, _ in statuses.values()),
            by_status={status: statuses.get(status, (0, 0, 0))[0] for status in JOB_STATUSES},
            nodes=sum(nodes for _, nodes, _ in statuses.values()),
            completed_paths=sum(completed for _, _, completed in statuses.values()),
        )
        for study_id, statuses in found.items()
    }


def count_open(session: Session, owner: str) -> int:
    """How many of `owner`'s studies have a job still queued or running."""
    return session.scalar(
        select(func.count(func.distinct(Job.study_id)))
        .where(Job.owner == owner, Job.study_id.is_not(None), Job.status.in_(OPEN_STATUSES))
    ) or 0


# -- cancel and delete ------------------------------------------------------------------------------


def cancel_study(session: Session, study_id: uuid.UUID) -> int:
    """Cancel every queued or running job of the study, as `models.jobs.cancel_job` cancels one (one
    conditional UPDATE: a job that ended meanwhile keeps its status); their nodes stay. Returns how
    many this call cancelled. Commits."""
    outcome = session.execute(
        update(JOBS)
        .where(JOBS.c.study_id == study_id, JOBS.c.status.in_(OPEN_STATUSES))
        .values(status="cancelled", finished_at=db_now(), error=None)
    )
    session.commit()
    return _rowcount(outcome)


def delete_study(session: Session, study_id: uuid.UUID) -> bool:
    """Delete the study, its jobs and their nodes. True if there was such a study. Commits.

    Cancel it first (`cancel_study`): a worker's next step write then finds its job closed, or gone."""
    its_jobs = select(Job.id).where(Job.study_id == study_id).scalar_subquery()
    # Explicitly, as `models.jobs.delete_job` does: one statement over an index each, on every backend.
    session.execute(delete(NodeRow).where(NodeRow.job_id.in_(its_jobs))
                    .execution_options(synchronize_session=False))
    session.execute(delete(Job).where(Job.study_id == study_id).execution_options(synchronize_session=False))
    outcome = session.execute(delete(Study).where(Study.id == study_id)
                              .execution_options(synchronize_session=False))
    session.commit()
    return _rowcount(outcome) == 1


# -- fork points ------------------------------------------------------------------------------------


def forks(session: Session, study_id: uuid.UUID, by: ForkRanking = "entropy", limit: int = 20) -> list[Fork]:
    """The study's `limit` fork points (expanded nodes with more than one child, in any of its trees),
    the most undecided first: by the entropy of the next token (highest first), by the number of
    children, or by the probability mass the tree left unexplored there. Ties: the earlier node first.

    The database groups the study's nodes by parent (the (job, parent, token) index) and ranks the groups;
    only the `limit` forks, and their paths from the root, come back. The unexplored mass is the one the
    worker recorded at the expansion, or for rows written before it did (migration 0007), 1 - the
    children's probabilities summed here."""
    if by not in FORK_RANKINGS:
        raise ValueError(f"not a fork ranking: {by!r}")
    children = (
        select(NodeRow.parent_id.label("fork_id"), func.count().label("branches"),
               (1.0 - func.sum(NodeRow.prob)).label("unexplored_mass"))
        .where(NodeRow.job_id.in_(select(Job.id).where(Job.study_id == study_id)),
               NodeRow.parent_id.is_not(None))
        .group_by(NodeRow.job_id, NodeRow.parent_id)
        .having(func.count() > 1)
        .subquery()
    )
    unexplored = func.coalesce(NodeRow.unexplored_mass, children.c.unexplored_mass)
    rank = {
        "entropy": (NodeRow.entropy.desc().nulls_last(),),
        "branches": (children.c.branches.desc(), NodeRow.entropy.desc().nulls_last()),
        "unexplored_mass": (unexplored.desc(),),
    }[by]
    rows = session.execute(
        select(NodeRow.id, NodeRow.job_id, NodeRow.depth, NodeRow.prob, NodeRow.cumulative_prob,
               NodeRow.entropy, children.c.branches, unexplored, NodeRow.candidates, Job.prefix)
        .join(children, NodeRow.id == children.c.fork_id)
        .join(Job, Job.id == NodeRow.job_id)
        .order_by(*rank, NodeRow.id)
        .limit(limit)
    ).all()
    steps = path_steps(session, [row[0] for row in rows])
    return [
        Fork(node_id=node_id, job_id=job_id, depth=depth, prob=prob, cumulative_prob=cumulative_prob,
             entropy=entropy, branches=branches, unexplored_mass=max(0.0, float(unexplored)),
             candidates=candidates or "[]",
             path_text=response_text(prefix, (text for _, text in steps[node_id])))
        for node_id, job_id, depth, prob, cumulative_prob, entropy, branches, unexplored, candidates, prefix
        in rows
    ]


# -- export -----------------------------------------------------------------------------------------


def node_batches(session: Session, job_ids: Sequence[uuid.UUID]) -> Iterator[tuple[uuid.UUID, list[Any]]]:
    """The jobs' nodes, job after job (each by node id), as (job id, rows) batches of at most
    `EXPORT_BATCH_ROWS` rows with `EXPORT_NODE_COLUMNS`, read a batch at a time (a server-side cursor on
    Postgres), so an export of millions of nodes never holds them all."""
    for job_id in job_ids:
        result = session.execute(
            select(*EXPORT_NODE_COLUMNS).where(NodeRow.job_id == job_id).order_by(NodeRow.id)
            .execution_options(yield_per=EXPORT_BATCH_ROWS)
        )
        for batch in result.partitions():
            yield job_id, [tuple(row) for row in batch]
