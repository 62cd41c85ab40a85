"""The job repository: every query on the `jobs` table lives here.

Lifecycle: queued -> running -> succeeded | failed | cancelled (cancelled also straight from queued).
A terminal status is final: each transition is one conditional UPDATE that only matches a job still
queued or running, so when several workers (or a worker and a cancel) race, exactly one wins and the
function tells its caller whether it was that one.

State transitions commit (each is its own unit of work, and the API must commit a job before its task
is sent); `add_counts` does not, so counts commit together with the nodes they count.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import CursorResult, Table, delete, exists, func, select, update
from sqlalchemy.orm import Session

from tokentree.models.schema import JOB_STATUSES, TERMINAL_STATUSES, Job, NodeRow, db_now

log = logging.getLogger(__name__)

OPEN_STATUSES = ("queued", "running")
# The table, for the statements workers run for every job: Core skips the ORM's bookkeeping.
JOBS = cast(Table, Job.__table__)
# A worker's traceback can be long; the job keeps its head and its tail, where the cause usually is.
MAX_ERROR_CHARS = 8_000

JobId = uuid.UUID | str


def as_job_id(job_id: JobId) -> uuid.UUID:
    """A job id from its string form (as tasks carry it); raises ValueError for anything else."""
    return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _clip_error(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    half = MAX_ERROR_CHARS // 2
    return error[:half] + "\n[...]\n" + error[-half:]


# -- create and read --------------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    kind: str,
    prompt: str,
    model: str,
    parameters: dict[str, Any],
    chat: bool = False,
    prefix: str | None = None,
    owner: str | None = None,
    idempotency_key: str | None = None,
    text: str | None = None,
) -> Job:
    """Insert a queued job and commit it (its task may only be sent after this returns). An
    `idempotency_key` (scoped: `idempotency_scope`) another job has raises IntegrityError. `text` is what
    a score job scores."""
    job = new_job(kind=kind, prompt=prompt, model=model, parameters=parameters, chat=chat, prefix=prefix,
                  owner=owner, idempotency_key=idempotency_key, text=text)
    session.add(job)
    session.commit()
    return job


def new_job(
    *, kind: str, prompt: str, model: str, parameters: dict[str, Any], chat: bool = False,
    prefix: str | None = None, owner: str | None = None, idempotency_key: str | None = None,
    study_id: uuid.UUID | None = None, text: str | None = None,
) -> Job:
    """A queued job not yet added to any session (a study adds many in one transaction)."""
    return Job(id=uuid.uuid4(), kind=kind, prompt=prompt, model=model, parameters=parameters, chat=chat,
               prefix=prefix, text=text, owner=owner, idempotency_key=idempotency_key, study_id=study_id,
               status="queued", node_count=0, completed_paths=0)


def idempotency_scope(owner: str | None, key: str) -> str:
    """A caller's Idempotency-Key as stored: keys are per owner (a key has no spaces; "-": no owner)."""
    return f"{owner or '-'} {key}"


def job_by_idempotency_key(session: Session, scoped_key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == scoped_key))


def get_job(session: Session, job_id: JobId) -> Job | None:
    """The job, or None when there is no such job."""
    return session.get(Job, as_job_id(job_id), populate_existing=True)


def get_jobs(session: Session, job_ids: Iterable[JobId]) -> dict[uuid.UUID, Job]:
    """Those of the jobs that exist, by id, read in one query (fresh, as `get_job`)."""
    keys = {as_job_id(job_id) for job_id in job_ids}
    if not keys:
        return {}
    found = session.scalars(select(Job).where(Job.id.in_(keys)).execution_options(populate_existing=True))
    return {job.id: job for job in found}


def seconds_since_start(session: Session, job_id: JobId) -> float | None:
    """How long ago the job first started, on the database's clock (which recorded the start); None when it
    never started or is gone."""
    row = session.execute(select(JOBS.c.started_at, db_now()).where(JOBS.c.id == as_job_id(job_id))).first()
    return None if row is None or row[0] is None else (row[1] - row[0]).total_seconds()


def list_jobs(
    session: Session, *, status: str | None = None, limit: int = 50, offset: int = 0,
    owner: str | None = None,
) -> tuple[list[Job], int]:
    """A page of jobs, newest first, optionally only those with `status` or of `owner`; and how many
    match in all."""
    query = select(Job)
    count = select(func.count()).select_from(Job)
    if status is not None:
        query = query.where(Job.status == status)
        count = count.where(Job.status == status)
    if owner is not None:
        query = query.where(Job.owner == owner)
        count = count.where(Job.owner == owner)
    page = session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset))
    return list(page), session.scalar(count) or 0


def count_by_status(session: Session) -> dict[str, int]:
    """How many jobs are in each status (every status present, zeros included)."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        counts[status] = count
    return counts


def count_open(session: Session, owner: str) -> int:
    """How many of `owner`'s jobs submitted on their own are queued or running (a study's jobs count
    towards its own quota: `models.studies.count_open`)."""
    return session.scalar(
        select(func.count()).select_from(Job)
        .where(Job.owner == owner, Job.status.in_(OPEN_STATUSES), Job.study_id.is_(None))
    ) or 0


def job_counts(session: Session, job_id: JobId) -> tuple[int, int] | None:
    """The job's (node count, completed paths), or None when there is no such job."""
    row = session.execute(select(JOBS.c.node_count, JOBS.c.completed_paths)
                          .where(JOBS.c.id == as_job_id(job_id))).one_or_none()
    return None if row is None else (row[0], row[1])


def lock_owner(session: Session, owner: str) -> None:
    """Serialise `owner`'s submissions until the transaction ends (Postgres; SQLite writes are serial
    already), so a quota checked with `count_open` holds under concurrent submissions."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext("tokentree.owner:" + owner))))


def models_with_open_jobs(session: Session, models: Iterable[str]) -> list[str]:
    """Those of `models` (in their order) that some queued or running job names: one indexed lookup per
    model (`ix_jobs_model_status`), however many jobs are open."""
    return [model for model in models if session.scalar(
        select(exists().where(Job.model == model, Job.status.in_(OPEN_STATUSES))))]


# -- transitions ------------------------------------------------------------------------------------


def mark_running(session: Session, job_id: JobId, worker: str) -> bool:
    """Record that `worker` works on the job (queued -> running; already running stays running).

    Several workers may join one job: `started_at` keeps the first one's time. Returns False when the
    job is finished, cancelled or gone, in which case the worker must not touch it. Commits.
    """
    result = session.execute(
        update(Job)
        .where(Job.id == as_job_id(job_id), Job.status.in_(OPEN_STATUSES))
        .values(status="running", started_at=func.coalesce(Job.started_at, db_now()))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    joined = _rowcount(result) == 1
    log.info("job %s %s worker %s", job_id, "running on" if joined else "is closed to", worker)
    return joined


def claim_model(session: Session, job_id: JobId, fingerprint: str) -> str | None:
    """The fingerprint of the model the job is built with: `fingerprint` if this is the job's first
    worker (it is recorded), else the first worker's. None when the job is gone. Commits.

    One statement, so two first workers at once agree on whichever committed first."""
    recorded = session.scalar(
        update(JOBS)
        .where(JOBS.c.id == as_job_id(job_id))
        .values(model_fingerprint=func.coalesce(JOBS.c.model_fingerprint, fingerprint))
        .returning(JOBS.c.model_fingerprint)
    )
    session.commit()
    return recorded


def finish_job(
    session: Session,
    job_id: JobId,
    status: str,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> bool:
    """Move a queued or running job to a terminal `status` (succeeded, failed or cancelled).

    Exactly once: returns True for the one call that finished the job, False if it was already
    finished (or deleted), in which case nothing changes. `result` (when given) replaces the job's
    result: {"record": ...} for a logprobs job; for a tree job, every key but "record" is added to the
    tree JSON's metadata (model source, dtype, versions, prompt_token_ids, stats). Commits.
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"not a terminal status: {status!r}")
    values: dict[str, Any] = {"status": status, "finished_at": db_now(), "error": _clip_error(error)}
    if result is not None:
        values["result"] = result
    outcome = session.execute(
        update(JOBS).where(JOBS.c.id == as_job_id(job_id), JOBS.c.status.in_(OPEN_STATUSES)).values(**values)
    )
    session.commit()
    return _rowcount(outcome) == 1


def cancel_job(session: Session, job_id: JobId) -> bool:
    """Cancel a queued or running job; its nodes stay (the partial tree). True if this call did it."""
    return finish_job(session, job_id, "cancelled")


def delete_job(session: Session, job_id: JobId) -> bool:
    """Delete a job and its nodes. True if there was such a job. Commits.

    Cancel a running job first (see `cancel_job`): a worker's next step write then finds the job
    closed, or gone, and writes nothing.
    """
    key = as_job_id(job_id)
    # Explicitly, not through ON DELETE CASCADE alone: one statement over an index, on every backend.
    session.execute(delete(NodeRow).where(NodeRow.job_id == key).execution_options(synchronize_session=False))
    outcome = session.execute(delete(Job).where(Job.id == key).execution_options(synchronize_session=False))
    session.commit()
    return _rowcount(outcome) == 1


# -- counts kept with the job -----------------------------------------------------------------------


def add_counts(session: Session, job_id: JobId, *, nodes: int = 0, completed_paths: int = 0) -> None:
    """Add to the job's node and completed-path counts, atomically (several workers add at once).

    Does not commit: call it in the transaction that writes the nodes, with the numbers of rows that
    transaction actually inserted, so the counts never disagree with the table.
    """
    if nodes == 0 and completed_paths == 0:
        return
    session.execute(
        update(JOBS)
        .where(JOBS.c.id == as_job_id(job_id))
        .values(node_count=JOBS.c.node_count + nodes,
                completed_paths=JOBS.c.completed_paths + completed_paths)
    )
