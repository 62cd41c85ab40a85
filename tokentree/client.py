"""`Client`: a tokentree service over HTTP (`tokentree serve`, or a deployment): submit jobs, wait for
them by following their event stream, and read their trees, paths and log-prob records.

It speaks only HTTP: nothing of the service's own packages is imported, so it runs wherever httpx does.
Every refusal is an `APIError` carrying the API's `detail`.
"""

from __future__ import annotations

import json
import time
import uuid
from types import TracebackType
from typing import Any, overload

import httpx

from tokentree.engine.tree import CompletedPath
from tokentree.errors import APIError, JobTimeout, StudyTimeout
from tokentree.events import EventReader
from tokentree.jobs import Job
from tokentree.progress import JobsProgress, NodeProgress
from tokentree.studies import Study, forks_table
from tokentree.tree import Tree
from tokentree.version import __version__

JobRef = Job | str | uuid.UUID
StudyRef = Study | str | uuid.UUID
DEFAULT_TIMEOUT_S = 30.0
# Between polls once the event stream is refused (429), unless the server asks for longer.
POLL_INTERVAL_S = 1.0
# Between a stream that ended without the job's end and the next one: no hot loop on a server that
# closes streams early.
RECONNECT_PAUSE_S = 0.2
# Statuses a wait rides out (the server asks to come back later) rather than raising.
TRANSIENT_STATUSES = frozenset({429, 503})


class Client:
    """A tokentree service at `url` (e.g. `http://127.0.0.1:8000`). `api_key` is sent as a bearer token
    where the service requires keys; `timeout` bounds each request, in seconds."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        headers = {"User-Agent": f"tokentree-python/{__version__}"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- jobs -------------------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str,
        *,
        kind: str = "tree",
        model: str | None = None,
        chat: bool = False,
        prefix: str | None = None,
        text: str | None = None,
        idempotency_key: str | None = None,
        **parameters: Any,
    ) -> Job:
        """Queue a job: `kind` is `tree`, `logprobs` or `score` (which scores `text` as the continuation of
        `prompt`; only it takes `text`), `model` one of the server's (its default if None), `parameters`
        the kind's (`max_nodes=400`, ...; the server fills in the rest). With an `idempotency_key`,
        submitting again returns the first submission's job instead of a second one."""
        body: dict[str, Any] = {"prompt": prompt, "kind": kind, "parameters": parameters, "chat": chat,
                                "prefix": prefix}
        if text is not None:
            body["text"] = text
        if model is not None:
            body["model"] = model
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return Job.from_json(self._call("POST", "/v1/jobs", json=body, headers=headers).json())

    def job(self, job: JobRef) -> Job:
        """The job as it stands now."""
        return Job.from_json(self._call("GET", f"/v1/jobs/{_id(job)}").json())

    def cancel(self, job: JobRef) -> Job:
        """Stop a queued or running job (its partial tree stays); an ended job is a 409 `APIError`."""
        return Job.from_json(self._call("POST", f"/v1/jobs/{_id(job)}/cancel").json())

    def expand(self, job: JobRef, node_id: int, token_id: int | None = None, **parameters: Any) -> Job:
        """Grow an ended tree job in place (`POST /v1/jobs/{id}/expand`): the node's recorded candidate
        `token_id` becomes a new child and grows by the rule; without `token_id`, the node itself (a leaf a
        limit left unexpanded) grows further. `parameters` (`max_nodes=50`, ...) are for this growth,
        over the job's own. The job runs again: `wait` for it, then read its `tree`."""
        body: dict[str, Any] = {"node_id": node_id, "token_id": token_id}
        if parameters:
            body["parameters"] = parameters
        return Job.from_json(self._call("POST", f"/v1/jobs/{_id(job)}/expand", json=body).json())

    def delete(self, job: JobRef) -> None:
        """Delete a job and its nodes, cancelling it first if it still runs."""
        self._call("DELETE", f"/v1/jobs/{_id(job)}")

    @overload
    def wait(self, job: Study, timeout: float | None = None, *, progress: bool = True) -> Study: ...

    @overload
    def wait(self, job: JobRef, timeout: float | None = None, *, progress: bool = True) -> Job: ...

    def wait(
        self, job: JobRef | Study, timeout: float | None = None, *, progress: bool = True
    ) -> Job | Study:
        """Block until the job ends (succeeded, failed or cancelled) and return it; raise `JobTimeout`
        after `timeout` seconds (None: no limit). Follows the job's event stream; where the server
        refuses a stream (429: too many open), polls the job instead.

        Given a `Study` (from `submit_study` or `study`), waits until every job of it has ended and returns
        the study; raises `StudyTimeout` after `timeout`. An id alone is taken for a job's."""
        if isinstance(job, Study):
            return self._wait_study(job.id, timeout, progress)
        job_id = _id(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.job(job_id)
        polling = False
        with NodeProgress(progress and current.kind == "tree", f"job {job_id[:8]}") as bar:
            while True:
                bar.update(current.progress, current.status)
                if current.done:
                    return current
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(current, timeout or 0.0)
                pause = POLL_INTERVAL_S if polling else RECONNECT_PAUSE_S
                if not polling:
                    try:
                        seen = self._follow_events(job_id, deadline, bar)
                        if seen is not None and seen.done:
                            current = seen
                            continue
                    except APIError as refused:
                        if refused.status not in TRANSIENT_STATUSES:
                            raise
                        polling = refused.status == 429  # too many open streams: poll from now on
                        pause = refused.retry_after or POLL_INTERVAL_S
                _sleep(pause, deadline)
                try:
                    current = self.job(job_id)  # raises if the job was deleted or the key revoked
                except APIError as refused:
                    if refused.status not in TRANSIENT_STATUSES:
                        raise
                    _sleep(refused.retry_after or POLL_INTERVAL_S, deadline)

    # -- studies ----------------------------------------------------------------------------------------

    def submit_study(
        self,
        name: str,
        *,
        prompts: list[str] | None = None,
        template: str | None = None,
        values: list[dict[str, Any]] | None = None,
        models: list[str] | None = None,
        parameter_sets: list[dict[str, Any]] | None = None,
        kind: str = "tree",
        chat: bool = False,
        prefix: str | None = None,
        idempotency_key: str | None = None,
    ) -> Study:
        """Queue a study: a job for every combination of its `prompts` (or of `template`, a prompt with
        `{name}` fields, filled from each row of `values`), its `models` (the server's default if None) and
        its `parameter_sets` (each a job's parameters; one set of the server's defaults if None). Returns
        the study with its jobs, all queued."""
        body: dict[str, Any] = {"name": name, "kind": kind, "chat": chat, "prefix": prefix}
        for field, value in (("prompts", prompts), ("template", template), ("values", values),
                             ("models", models), ("parameter_sets", parameter_sets)):
            if value is not None:
                body[field] = value
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return Study.from_json(self._call("POST", "/v1/studies", json=body, headers=headers).json())

    def study(self, study: StudyRef) -> Study:
        """The study as it stands now, with its jobs."""
        return Study.from_json(self._call("GET", f"/v1/studies/{_study_id(study)}").json())

    def studies(self, limit: int = 50, offset: int = 0) -> list[Study]:
        """Studies, newest first (without their jobs: `study` reads them)."""
        page = self._call("GET", "/v1/studies", params={"limit": limit, "offset": offset}).json()
        return [Study.from_json(doc) for doc in page["items"]]

    def cancel_study(self, study: StudyRef) -> Study:
        """Stop every queued or running job of the study (their partial trees stay)."""
        return Study.from_json(self._call("POST", f"/v1/studies/{_study_id(study)}/cancel").json())

    def delete_study(self, study: StudyRef) -> None:
        """Delete the study, its jobs and their nodes."""
        self._call("DELETE", f"/v1/studies/{_study_id(study)}")

    def forks(self, study: StudyRef, by: str = "entropy", limit: int = 20) -> Any:
        """The fork points of all the study's trees (nodes where a tree branched), the most undecided
        first: `by` is `entropy` (of the next token), `branches` (children the tree expanded there) or
        `unexplored_mass` (1 - their probabilities). A pandas DataFrame, one row per fork with its job,
        prompt, path text and candidates; without pandas installed, the list `fork_points` returns."""
        return forks_table(self.fork_points(study, by, limit))

    def fork_points(self, study: StudyRef, by: str = "entropy", limit: int = 20) -> list[dict[str, Any]]:
        """`forks` as the API sends them: a list of dicts (job_id, node_id, prompt, path_text, entropy,
        branches, unexplored_mass, candidates, ...)."""
        found: list[dict[str, Any]] = self._call("GET", f"/v1/studies/{_study_id(study)}/forks",
                                                 params={"by": by, "limit": limit}).json()["forks"]
        return found

    def study_nodes(self, study: StudyRef) -> Any:
        """Every node of the study's trees as a pandas DataFrame (needs pandas and pyarrow): one row per
        node, with its job's id, prompt, model and parameters as columns."""
        import io

        import pandas as pd

        content = self._call("GET", f"/v1/studies/{_study_id(study)}/nodes",
                             params={"format": "parquet"}).content
        return pd.read_parquet(io.BytesIO(content))

    def _wait_study(self, study_id: str, timeout: float | None, progress: bool) -> Study:
        """Poll the study until all its jobs have ended (one request a second, however many jobs)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.study(study_id)
        with JobsProgress(progress, f"study {current.name[:20]}", current.progress.jobs) as bar:
            while True:
                bar.update(current.progress.ended, current.progress)
                if current.done:
                    return current
                if deadline is not None and time.monotonic() >= deadline:
                    raise StudyTimeout(current, timeout or 0.0)
                _sleep(POLL_INTERVAL_S, deadline)
                try:
                    current = self.study(study_id)  # raises if the study was deleted or the key revoked
                except APIError as refused:
                    if refused.status not in TRANSIENT_STATUSES:
                        raise
                    _sleep(refused.retry_after or POLL_INTERVAL_S, deadline)

    # -- results ----------------------------------------------------------------------------------------

    def tree(self, job: JobRef, *, root: int | None = None, max_depth: int | None = None) -> Tree:
        """The job's tree (partial while it runs): whole, or the subtree at node `root`, `max_depth`
        levels deep."""
        params = {name: value for name, value in (("root", root), ("max_depth", max_depth))
                  if value is not None}
        return Tree.from_json(self._call("GET", f"/v1/jobs/{_id(job)}/tree", params=params).content)

    def paths(self, job: JobRef, limit: int = 100) -> list[CompletedPath]:
        """The job's completed paths, most probable first, at most `limit`."""
        found = self._call("GET", f"/v1/jobs/{_id(job)}/paths", params={"limit": limit}).json()["paths"]
        return [CompletedPath(node_id=p["node_id"], token_ids=p["tokens"], text=p["text"],
                              cumulative_prob=p["cumulative_prob"]) for p in found]

    def logprobs(self, job: JobRef) -> dict[str, Any]:
        """A finished logprobs or score job's record: what `tokentree logprobs -o` (`tokentree score -o`)
        writes."""
        text = self._call("GET", f"/v1/jobs/{_id(job)}/logprobs.jsonl").text
        record: dict[str, Any] = json.loads(text.strip().splitlines()[0])
        return record

    # -- plumbing ---------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **options: Any) -> httpx.Response:
        response = self._http.request(method, path, **options)
        if response.is_error:
            raise _api_error(response)
        return response

    def _follow_events(self, job_id: str, deadline: float | None, bar: NodeProgress) -> Job | None:
        """Read the job's event stream until its `end`, the deadline, or the stream's own end; the job as
        last seen there (None if nothing came)."""
        seen = None
        read_s = self.timeout
        if deadline is not None:
            read_s = max(0.1, min(self.timeout, deadline - time.monotonic()))
        reader = EventReader()
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events",
                                   headers={"Accept": "text/event-stream"},
                                   timeout=httpx.Timeout(self.timeout, read=read_s)) as response:
                if response.is_error:
                    response.read()
                    raise _api_error(response)
                for line in response.iter_lines():
                    event = reader.feed(line)
                    if event is not None and event.name in ("progress", "end"):
                        seen = Job.from_json(json.loads(event.data))
                        bar.update(seen.progress, seen.status)
                        if seen.done:
                            return seen
                    if event is not None and event.name == "error":
                        return seen  # the job is read again: deleted (404) or the key revoked (401) raise
                    if deadline is not None and time.monotonic() >= deadline:
                        return seen
        except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the stream broke: the job is read again (and a server that is gone raises there)
        return seen


def _id(job: JobRef) -> str:
    return job.id if isinstance(job, Job) else str(job)


def _study_id(study: StudyRef) -> str:
    return study.id if isinstance(study, Study) else str(study)


def _api_error(response: httpx.Response) -> APIError:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text.strip() or response.reason_phrase
    retry_after = response.headers.get("Retry-After")
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        seconds = None  # an HTTP date: the default pause will do
    return APIError(response.status_code, detail, seconds)


def _sleep(seconds: float, deadline: float | None) -> None:
    if deadline is not None:
        seconds = min(seconds, max(0.0, deadline - time.monotonic()))
    time.sleep(seconds)
