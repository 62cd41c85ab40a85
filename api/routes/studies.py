"""/v1/studies: submit a study (every combination of prompts, models and parameter sets, as jobs), list,
read, cancel and delete studies; their fork points ranked, and all their nodes as CSV or Parquet.

A study belongs to the API key that made it, as a job does (another key's study is a 404). Its jobs are
committed together, then their tasks are sent (`api.dispatch.send_committed`, as for one job).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask

from tokentree.api.auth import Caller, CallerDep
from tokentree.api.deps import DispatcherDep, ReleasesSession, SessionDep, SettingsDep
from tokentree.api.dispatch import send_committed
from tokentree.api.limits import CallerSlots, enforce_rate_limit, too_many
from tokentree.api.routes.jobs import IDEMPOTENCY_KEY, MAX_OFFSET, QUOTA_RETRY_S, REFUSALS, Warnings
from tokentree.api.schemas import (
    CandidateOut,
    ForkOut,
    ForksOut,
    JobOut,
    StudyCreate,
    StudyOut,
    StudyPage,
    StudyProgressOut,
)
from tokentree.api.study_requests import StudyRequest, validate_study_request
from tokentree.api.validation import reject
from tokentree.models import jobs, node_reads, studies
from tokentree.models.schema import Job, Study

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/studies", tags=["studies"], route_class=ReleasesSession,
                   dependencies=[Depends(enforce_rate_limit)], responses=REFUSALS)
# The job's columns of an export, before its parameters (one column each) and the node's columns.
EXPORT_JOB_NAMES = ("job_id", "prompt", "model")
PARQUET_SPOOL_BYTES = 64 * 1024 * 1024  # a Parquet file kept in memory up to this, on disk beyond
CHUNK_BYTES = 1024 * 1024


def _study_or_404(session: Session, study_id: uuid.UUID, caller: Caller) -> Study:
    study = studies.get_study(session, study_id)
    if study is None or (caller.owner is not None and study.owner != caller.owner):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"study {study_id} not found")
    return study


def _study_out(session: Session, study: Study, request: Request, *, with_jobs: bool) -> StudyOut:
    progress = studies.studies_progress(session, [study.id])[study.id]
    found = None
    if with_jobs:
        warnings = Warnings(request.app.state.broker)
        found = [JobOut.of(job, node_reads.counted_progress(job), warnings.of(job))
                 for job in studies.study_jobs(session, study.id)]
    return _out(study, progress, found)


def _out(study: Study, progress: studies.StudyProgress, found: list[JobOut] | None) -> StudyOut:
    return StudyOut(id=study.id, name=study.name, created_at=study.created_at, request=study.request,
                    done=progress.done, jobs=found,
                    progress=StudyProgressOut(jobs=progress.jobs, by_status=progress.by_status,
                                              nodes=progress.nodes, completed_paths=progress.completed_paths))


@router.post("", status_code=status.HTTP_201_CREATED)
def submit_study(
    body: StudyCreate, http: Request, response: Response, session: SessionDep, settings: SettingsDep,
    dispatcher: DispatcherDep, caller: CallerDep,
    idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
) -> StudyOut:
    """Queue a study: a job for every combination of its prompts (or its template's rows of values), its
    models and its parameter sets, all made in one transaction (at most TOKENTREE_STUDY_MAX_JOBS)."""
    request = validate_study_request(body, settings)
    scoped_key = None if idempotency_key is None else jobs.idempotency_scope(caller.owner, idempotency_key)
    earlier = None if scoped_key is None else studies.study_by_idempotency_key(session, scoped_key)
    if earlier is not None:
        return _replayed(session, earlier, request, response, http)
    if caller.owner is not None and settings.max_active_studies_per_key:
        jobs.lock_owner(session, caller.owner)  # held until create_study commits
        active = studies.count_open(session, caller.owner)
        if active >= settings.max_active_studies_per_key:
            session.rollback()
            http.app.state.metrics.refused("quota")
            raise too_many(f"this API key has {active} studies with queued or running jobs, the most "
                           f"allowed ({settings.max_active_studies_per_key}); retry when one ends",
                           QUOTA_RETRY_S)
    try:
        study, made = studies.create_study(
            session, name=request.name, request=request.request, kind=request.kind,
            combinations=request.combinations, chat=request.chat, prefix=request.prefix, owner=caller.owner,
            idempotency_key=scoped_key)
    except IntegrityError:
        session.rollback()  # the same key's other submission, at the same moment, made the study first
        earlier = studies.study_by_idempotency_key(session, scoped_key) if scoped_key is not None else None
        if earlier is None:
            raise
        return _replayed(session, earlier, request, response, http)
    log.info("study submitted: %d %s jobs", len(made), request.kind)
    send_committed(session, dispatcher, made)
    return _study_out(session, study, http, with_jobs=True)


def _replayed(session: Session, study: Study, request: StudyRequest, response: Response,
              http: Request) -> StudyOut:
    """The study an earlier submission with the same Idempotency-Key made, if it asked for the same."""
    if request.request != study.request:
        reject(("header", "idempotency-key"), f"was used for a different request (study {study.id}); "
                                              "a new request needs a new key")
    response.status_code = status.HTTP_200_OK
    response.headers["Idempotent-Replayed"] = "true"
    return _study_out(session, study, http, with_jobs=True)


@router.get("")
def list_studies(
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> StudyPage:
    """Studies, newest first, a page at a time, each with its jobs' progress together (not the jobs)."""
    if limit > settings.max_page_size:
        reject(("query", "limit"), f"must be at most {settings.max_page_size}, got {limit}", limit)
    page, total = studies.list_studies(session, limit=limit, offset=offset, owner=caller.owner)
    progress = studies.studies_progress(session, [study.id for study in page])
    return StudyPage(items=[_out(study, progress[study.id], None) for study in page], total=total)


@router.get("/{study_id}")
def get_study(study_id: uuid.UUID, request: Request, session: SessionDep, caller: CallerDep) -> StudyOut:
    """One study: its jobs' progress together (jobs in each status, nodes, completed paths), and its
    jobs, each with its own status and progress."""
    return _study_out(session, _study_or_404(session, study_id, caller), request, with_jobs=True)


@router.post("/{study_id}/cancel")
def cancel_study(study_id: uuid.UUID, request: Request, session: SessionDep, caller: CallerDep) -> StudyOut:
    """Stop every queued or running job of the study, as cancelling each would; the nodes written so far
    stay, and the jobs that had ended keep their status."""
    _study_or_404(session, study_id, caller)
    cancelled = studies.cancel_study(session, study_id)
    log.info("study %s: %d jobs cancelled", study_id, cancelled)  # workers stop at their next write
    return _study_out(session, _study_or_404(session, study_id, caller), request, with_jobs=True)


@router.delete("/{study_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_study(study_id: uuid.UUID, request: Request, session: SessionDep, caller: CallerDep) -> Response:
    """Delete the study, its jobs and their nodes, cancelling the jobs still running first."""
    _study_or_404(session, study_id, caller)
    job_ids = [job.id for job in studies.study_jobs(session, study_id)]
    studies.cancel_study(session, study_id)  # their workers stop at their next write
    studies.delete_study(session, study_id)
    log.info("study %s deleted with %d jobs", study_id, len(job_ids))
    for job_id in job_ids:
        request.app.state.rendered_trees.forget(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{study_id}/forks")
def get_forks(
    study_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    by: Annotated[studies.ForkRanking, Query(description="entropy: the next token's entropy at the fork; "
                                             "branches: how many children it got; unexplored_mass: 1 - "
                                             "their probabilities")] = "entropy",
    limit: Annotated[int, Query(ge=1)] = 20,
) -> ForksOut:
    """The fork points of all the study's trees (expanded nodes with more than one child), the most
    undecided first, each with its job, prompt, path text and candidates."""
    if limit > settings.max_page_size:
        reject(("query", "limit"), f"must be at most {settings.max_page_size}, got {limit}", limit)
    _study_or_404(session, study_id, caller)
    found = studies.forks(session, study_id, by=by, limit=limit)
    their_jobs = jobs.get_jobs(session, {fork.job_id for fork in found})
    return ForksOut(by=by, forks=[_fork_out(fork, their_jobs[fork.job_id]) for fork in found])


def _fork_out(fork: studies.Fork, job: Job) -> ForkOut:
    return ForkOut(job_id=fork.job_id, node_id=fork.node_id, prompt=job.prompt, model=job.model,
                   parameters=job.parameters, path_text=fork.path_text, depth=fork.depth, prob=fork.prob,
                   cumulative_prob=fork.cumulative_prob, entropy=fork.entropy, branches=fork.branches,
                   unexplored_mass=fork.unexplored_mass,
                   candidates=[CandidateOut(**candidate) for candidate in json.loads(fork.candidates)])


# -- export -----------------------------------------------------------------------------------------


class _Export:
    """A study's nodes as a table: the job's columns, its parameters (one column each, the union over
    the study's jobs, sorted), then the node's columns."""

    def __init__(self, study_jobs: Sequence[Job]) -> None:
        self.jobs = {job.id: job for job in study_jobs}
        self.parameters = sorted({name for job in study_jobs for name in job.parameters})
        self.columns = [*EXPORT_JOB_NAMES, *self.parameters, *studies.EXPORT_NODE_NAMES]

    def job_values(self, job_id: uuid.UUID) -> tuple[Any, ...]:
        job = self.jobs[job_id]
        return (str(job.id), job.prompt, job.model, *(job.parameters.get(name) for name in self.parameters))


@router.get(
    "/{study_id}/nodes",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
                     "description": "one row per node of every job of the study: the job's id, prompt, "
                                    "model and parameters (a column each), then the node's columns"}},
)
def get_nodes(
    study_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    caller: CallerDep,
    format: Annotated[Literal["csv", "parquet"], Query()] = "csv",
) -> StreamingResponse:
    """Every node of the study, for pandas: CSV streams as it is read, whatever the size; Parquet is
    written whole first (at most TOKENTREE_STUDY_PARQUET_MAX_ROWS nodes)."""
    # No SessionDep: a CSV streams after this function returns, and reads with its own session.
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        study = _study_or_404(session, study_id, caller)
        study_jobs = studies.study_jobs(session, study.id)
        session.expunge_all()
    rows = sum(job.node_count for job in study_jobs)
    if format == "parquet" and rows > settings.study_parquet_max_rows:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"study {study_id} has {rows} nodes, more than a Parquet export holds on this "
                            f"server ({settings.study_parquet_max_rows}); ask for format=csv, which streams")
    slots: CallerSlots = request.app.state.export_slots
    free_slot = slots.take(caller)
    export = _Export(study_jobs)
    filename = f"study-{study_id}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}
    if format == "csv":
        return StreamingResponse(_csv_chunks(factory, export, free_slot), headers=headers,
                                 media_type="text/csv; charset=utf-8", background=BackgroundTask(free_slot))
    try:
        with factory() as session:
            file = _parquet_file(session, export)
    finally:
        free_slot()
    return StreamingResponse(_file_chunks(file), media_type="application/vnd.apache.parquet", headers=headers)


def _csv_chunks(factory: sessionmaker[Session], export: _Export, free_slot: Any) -> Iterator[str]:
    try:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(export.columns)
        with factory() as session:
            for job_id, batch in studies.node_batches(session, list(export.jobs)):
                job_values = export.job_values(job_id)
                writer.writerows(job_values + row for row in batch)
                yield text.getvalue()
                text.seek(0)
                text.truncate()
        yield text.getvalue()
    finally:
        free_slot()


def _parquet_file(session: Session, export: _Export) -> IO[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    job_types = [pa.string()] * len(EXPORT_JOB_NAMES) + [
        pa.array([job.parameters.get(name) for job in export.jobs.values()]).type
        for name in export.parameters]
    arrow_types = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
    node_types = [arrow_types[column.type.python_type] for column in studies.EXPORT_NODE_COLUMNS]
    schema = pa.schema(list(zip(export.columns, job_types + node_types, strict=True)))
    file = tempfile.SpooledTemporaryFile(max_size=PARQUET_SPOOL_BYTES)  # noqa: SIM115 (the response closes it)
    with pq.ParquetWriter(file, schema) as writer:
        for job_id, batch in studies.node_batches(session, list(export.jobs)):
            job_values = export.job_values(job_id)
            node_columns = [list(column) for column in zip(*batch, strict=True)]
            writer.write_table(pa.table([[value] * len(batch) for value in job_values] + node_columns,
                                        schema=schema))
    file.seek(0)  # (a study without nodes is still a valid, empty, table)
    return file


def _file_chunks(file: IO[bytes]) -> Iterator[bytes]:
    with file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk
