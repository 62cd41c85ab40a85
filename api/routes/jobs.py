"""/v1/jobs: submit, list, read, cancel and delete jobs; their trees, paths, records and progress."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import redis
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask

from tokentree.api.auth import Caller, CallerDep
from tokentree.api.deps import DispatcherDep, ReleasesSession, SessionDep, SettingsDep
from tokentree.api.dispatch import send_committed
from tokentree.api.limits import CallerSlots, enforce_rate_limit, too_many
from tokentree.api.logs import bind_job
from tokentree.api.progress_feed import ProgressFeed, Reading
from tokentree.api.schemas import ErrorOut, JobCreate, JobOut, JobPage, JobStatus, PathOut, PathsOut
from tokentree.api.tree_cache import RenderedTrees
from tokentree.api.validation import JobRequest, reject, validate_job_request
from tokentree.models import api_keys, jobs, node_reads, worker_registry
from tokentree.models.schema import TERMINAL_STATUSES, Job
from tokentree.models.settings import Settings

log = logging.getLogger(__name__)

# Every refusal is {"detail": "..."}; 404 also stands for "another key's job" (its existence stays hidden).
REFUSALS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (401, 404, 409, 413, 429, 503)
}
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=ReleasesSession,
                   dependencies=[Depends(enforce_rate_limit)], responses=REFUSALS)
# Large enough for any real id, small enough for a 64-bit column: bigger ones are 422s, not 500s.
MAX_ID = 2**62
MAX_OFFSET = 10**9
QUOTA_RETRY_S = 10
# An Idempotency-Key: up to 255 visible ASCII characters (a UUID is the usual choice).
IDEMPOTENCY_KEY = Header(
    min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Submitting again with the same key (from the same API key) returns the job the first "
                "submission made, with status 200 and `Idempotent-Replayed: true`, instead of a second "
                "job: retry a submission whose answer was lost without risking a duplicate.",
)


def _job_or_404(session: Session, job_id: uuid.UUID, caller: Caller) -> Job:
    bind_job(job_id)
    job = jobs.get_job(session, job_id)
    if job is None or (caller.owner is not None and job.owner != caller.owner):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


def _live_workers(broker: redis.Redis | None) -> list[worker_registry.WorkerBeat] | None:
    """The live workers (their heartbeats in Redis); None when that is not known: the embedded mode (its
    worker serves every model) or Redis unreachable."""
    if broker is None:
        return None
    try:
        return worker_registry.live_workers(broker)
    except redis.RedisError as exc:
        log.warning("cannot read the live workers: %s", exc)
        return None


class Warnings:
    """A job's warning: an open job that no live worker can take says so (none serves its model, or
    none has the model it was started with). Redis is read once per request, and only when an open job
    asks."""

    def __init__(self, broker: redis.Redis | None) -> None:
        self.broker = broker
        self._workers: list[worker_registry.WorkerBeat] | None = None
        self._read = False

    def of(self, job: Job) -> str | None:
        if self.broker is None or job.status in TERMINAL_STATUSES:
            return None
        if not self._read:
            self._workers, self._read = _live_workers(self.broker), True
        if self._workers is None:
            return None
        return worker_registry.no_worker_warning(job.model, job.model_fingerprint, self._workers)


def _warnings(request: Request) -> Warnings:
    return Warnings(request.app.state.broker)


def _job_out(session: Session, job: Job, warnings: Warnings) -> JobOut:
    return JobOut.of(job, node_reads.job_progress(session, job.id), warnings.of(job))


def _require_kind(job: Job, *kinds: str) -> None:
    if job.kind not in kinds:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"job {job.id} is a {job.kind} job, not a {' or '.join(kinds)} job")


def enforce_active_jobs_quota(session: Session, settings: Settings, caller: Caller, http: Request) -> None:
    """A key may have TOKENTREE_MAX_ACTIVE_JOBS_PER_KEY jobs queued or running at most (429 beyond), a job
    grown in place included. Counted under the key's lock, which holds until the caller's transaction
    commits (the job it makes open, or its rollback)."""
    if caller.owner is None or not settings.max_active_jobs_per_key:
        return
    jobs.lock_owner(session, caller.owner)
    active = jobs.count_open(session, caller.owner)
    if active >= settings.max_active_jobs_per_key:
        session.rollback()
        http.app.state.metrics.refused("quota")
        raise too_many(f"this API key has {active} queued or running jobs, the most allowed "
                       f"({settings.max_active_jobs_per_key}); retry when one ends", QUOTA_RETRY_S)


@router.post("", status_code=status.HTTP_201_CREATED)
def submit_job(
    body: JobCreate, http: Request, response: Response, session: SessionDep, settings: SettingsDep,
    dispatcher: DispatcherDep, caller: CallerDep,
    idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
) -> JobOut:
    """Queue a token tree, a log-probability analysis, or the scoring of a text (`kind`)."""
    request = validate_job_request(body, settings)
    scoped_key = None if idempotency_key is None else jobs.idempotency_scope(caller.owner, idempotency_key)
    if scoped_key is not None and (earlier := jobs.job_by_idempotency_key(session, scoped_key)) is not None:
        return _replayed(session, earlier, request, response, http)
    enforce_active_jobs_quota(session, settings, caller, http)  # its lock holds until create_job commits
    try:
        job = jobs.create_job(session, kind=request.kind, prompt=request.prompt, model=request.model,
                              parameters=request.parameters, chat=request.chat, prefix=request.prefix,
                              owner=caller.owner, idempotency_key=scoped_key, text=request.text)
    except IntegrityError:
        session.rollback()  # the same key's other submission, at the same moment, made the job first
        earlier = jobs.job_by_idempotency_key(session, scoped_key) if scoped_key is not None else None
        if earlier is None:
            raise
        return _replayed(session, earlier, request, response, http)
    bind_job(job.id)
    log.info("job submitted: %s on %s", job.kind, job.model)
    send_committed(session, dispatcher, [job])
    return _job_out(session, job, _warnings(http))


def _replayed(session: Session, job: Job, request: JobRequest, response: Response, http: Request) -> JobOut:
    """The job an earlier submission with the same Idempotency-Key made, if it asked for the same job."""
    bind_job(job.id)
    asked = (request.kind, request.prompt, request.model, request.parameters, request.chat, request.prefix,
             request.text)
    if asked != (job.kind, job.prompt, job.model, dict(job.parameters), job.chat, job.prefix, job.text):
        reject(("header", "idempotency-key"), f"was used for a different request (job {job.id}); "
                                              "a new request needs a new key")
    response.status_code = status.HTTP_200_OK
    response.headers["Idempotent-Replayed"] = "true"
    return _job_out(session, job, _warnings(http))


@router.get("")
def list_jobs(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobPage:
    """Jobs, newest first, a page at a time; `status` keeps only jobs in that state."""
    if limit > settings.max_page_size:
        reject(("query", "limit"), f"must be at most {settings.max_page_size}, got {limit}", limit)
    page, total = jobs.list_jobs(session, status=status_filter, limit=limit, offset=offset,
                                 owner=caller.owner)
    warnings = _warnings(request)
    return JobPage(items=[JobOut.of(job, node_reads.counted_progress(job), warnings.of(job)) for job in page],
                   total=total)


@router.get("/{job_id}")
def get_job(job_id: uuid.UUID, request: Request, session: SessionDep, caller: CallerDep) -> JobOut:
    """One job with its progress: nodes, frontier, completed paths, nodes expanded per worker; and a
    warning while no live worker serves its model."""
    return _job_out(session, _job_or_404(session, job_id, caller), _warnings(request))


@router.post("/{job_id}/cancel")
def cancel_job(
    job_id: uuid.UUID, request: Request, session: SessionDep, dispatcher: DispatcherDep, caller: CallerDep
) -> JobOut:
    """Stop a queued or running job; the nodes written so far stay (the partial tree)."""
    _job_or_404(session, job_id, caller)
    if jobs.cancel_job(session, job_id):
        log.info("job cancelled")  # its workers stop at their next step's write, which reads the status
    job = _job_or_404(session, job_id, caller)
    if job.status != "cancelled":
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {job.status}")
    return _job_out(session, job, _warnings(request))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(
    job_id: uuid.UUID, request: Request, session: SessionDep, dispatcher: DispatcherDep, caller: CallerDep
) -> Response:
    """Delete a job and its nodes, cancelling it first if it still runs."""
    _job_or_404(session, job_id, caller)
    jobs.cancel_job(session, job_id)  # its workers stop at their next write
    jobs.delete_job(session, job_id)
    log.info("job deleted")
    request.app.state.rendered_trees.forget(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{job_id}/tree",
    response_class=Response,
    responses={200: {"content": {"application/json": {}},
                     "description": "the tree JSON, in the layout `tokentree tree -o` writes"}},
)
def get_tree(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    root: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                      description="a node id: serve only its subtree")] = None,
    max_depth: Annotated[int | None, Query(ge=0, le=MAX_ID,
                                           description="levels below the root to include")] = None,
) -> Response:
    """The job's token tree (partial while it runs), whole or a subtree, to a depth. Renders running at
    once are capped per caller and in all (429 beyond); a finished job's tree, once rendered, is served
    from memory without counting, and requests for a render already running wait for it."""
    job = _job_or_404(session, job_id, caller)
    _require_kind(job, "tree")
    final = job.status in TERMINAL_STATUSES
    headers = {"Cache-Control": "no-store"}
    if final:
        # A finished job's tree is final: a validator lets browsers keep it, the server keeps it rendered.
        etag = (f'"{job.id}-{job.finished_at.timestamp() if job.finished_at else 0}-{root}-{max_depth}-'
                f'{len(job.growths or [])}"')
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    # The connection goes back while this request may wait for the same render in flight (the session
    # takes one again if this request renders); the job read stays loaded.
    session.close()
    cache: RenderedTrees = request.app.state.rendered_trees
    slots: CallerSlots = request.app.state.render_slots
    # The growths count in the key: a tree grown in place is another document (and another process's
    # kept one of the same job must not be served for it).
    document = cache.document((job.id, root, max_depth, len(job.growths or [])), final=final,
                              render=lambda: _render_tree(session, job, root, max_depth),
                              admit=lambda: slots.take(caller))
    return Response(content=document, media_type="application/json", headers=headers)


def _render_tree(session: Session, job: Job, root: int | None, max_depth: int | None) -> bytes:
    try:
        text = node_reads.tree_json(session, job, root_id=root, max_depth=max_depth)
    except node_reads.NodeNotFound:
        reject(("query", "root"), f"node {root} is not in job {job.id}", root)
    if text is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job.id} has no nodes yet ({job.status})")
    return text.encode()


@router.get("/{job_id}/paths")
def get_paths(
    job_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> PathsOut:
    """Completed paths, most probable first; each one's `text` is its response: the job's forced prefix,
    then its tokens (the prompt left out)."""
    if limit > settings.max_paths:
        reject(("query", "limit"), f"must be at most {settings.max_paths}, got {limit}", limit)
    job = _job_or_404(session, job_id, caller)
    _require_kind(job, "tree")
    paths = node_reads.completed_paths(session, job.id, limit, prefix=job.prefix)
    return PathsOut(paths=[PathOut(**path.to_json()) for path in paths])


@router.get(
    "/{job_id}/logprobs.jsonl",
    response_class=Response,
    responses={200: {"content": {"application/x-ndjson": {}},
                     "description": "one JSONL record, the layout `tokentree logprobs -o` (or `tokentree "
                                    "score -o`) writes"}},
)
def get_logprobs_record(job_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> Response:
    """A finished logprobs or score job's record, as one JSONL line."""
    job = _job_or_404(session, job_id, caller)
    _require_kind(job, "logprobs", "score")
    record = (job.result or {}).get("record")
    if record is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} has no record ({job.status})")
    return Response(content=json.dumps(record) + "\n", media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'inline; filename="{job_id}.jsonl"'})


def read_watched(factory: sessionmaker[Session], broker: redis.Redis | None, job_ids: set[uuid.UUID],
                 key_ids: set[str]) -> Reading:
    """The watched jobs as their streams show them, and which watching keys are still active: three
    queries and at most one Redis read for every open stream of this process (see api/progress_feed.py)."""
    with factory() as session:
        active = api_keys.active_ids(session, key_ids) if key_ids else set()
        found = jobs.get_jobs(session, job_ids)
        progress = node_reads.jobs_progress(session, found)
        warnings = Warnings(broker)
        return Reading(jobs={job_id: JobOut.of(job, progress[job_id], warnings.of(job))
                             for job_id, job in found.items()},
                       active_keys=frozenset(active))


def _event(name: str, job: JobOut) -> str:
    return f"event: {name}\ndata: {job.model_dump_json()}\n\n"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`progress` events (the job JSON) while it runs, then one `end` (or "
                                    "one `error`: the database is unreachable, the job was deleted, or the "
                                    "caller's key revoked)"}},
)
def job_events(job_id: uuid.UUID, request: Request, settings: SettingsDep, caller: CallerDep
               ) -> StreamingResponse:
    """Server-sent progress events until the job ends."""
    # No SessionDep: a stream may last an hour, and must not hold a pooled connection all along.
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        _job_or_404(session, job_id, caller)
    free_slot = request.app.state.stream_slots.take(caller)
    feed: ProgressFeed = request.app.state.progress_feed

    async def stream() -> AsyncIterator[str]:
        try:
            async for event in _events():
                yield event
        finally:
            free_slot()

    async def _events() -> AsyncIterator[str]:
        last = None
        # The feed reads for every stream at once, every events_interval_s; this one waits for its share.
        with anyio.move_on_after(settings.events_max_s), feed.watch(job_id, caller.key_id) as watch:
            while not await request.is_disconnected():
                job = await watch.next()
                if isinstance(job, str):  # the stream must still say how it ended
                    yield f"event: error\ndata: {json.dumps({'detail': job})}\n\n"
                    return
                if job.status in TERMINAL_STATUSES:
                    yield _event("end", job)
                    return
                if job != last:
                    yield _event("progress", job)
                    last = job
                else:
                    yield ": still running\n\n"  # keeps proxies from closing an idle stream

    # The slot is freed when the stream ends, and by the background task if it never started (a client
    # gone before the first event).
    return StreamingResponse(stream(), media_type="text/event-stream", background=BackgroundTask(free_slot),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
