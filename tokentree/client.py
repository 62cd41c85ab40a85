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
from typing import Any

import httpx

from engine.tree import CompletedPath
from tokentree.errors import APIError, JobTimeout
from tokentree.events import EventReader
from tokentree.jobs import Job
from tokentree.progress import NodeProgress
from tokentree.tree import Tree
from tokentree.version import __version__

JobRef = Job | str | uuid.UUID
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
        idempotency_key: str | None = None,
        **parameters: Any,
    ) -> Job:
        """Queue a job: `kind` is `tree` or `logprobs`, `model` one of the server's (its default if None),
        `parameters` the kind's (`max_nodes=400`, ...; the server fills in the rest). With an
        `idempotency_key`, submitting again returns the first submission's job instead of a second one."""
        body: dict[str, Any] = {"prompt": prompt, "kind": kind, "parameters": parameters, "chat": chat,
                                "prefix": prefix}
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

    def delete(self, job: JobRef) -> None:
        """Delete a job and its nodes, cancelling it first if it still runs."""
        self._call("DELETE", f"/v1/jobs/{_id(job)}")

    def wait(self, job: JobRef, timeout: float | None = None, *, progress: bool = True) -> Job:
        """Block until the job ends (succeeded, failed or cancelled) and return it; raise `JobTimeout`
        after `timeout` seconds (None: no limit). Follows the job's event stream; where the server
        refuses a stream (429: too many open), polls the job instead."""
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
        """A finished logprobs job's record: what `tokentree logprobs -o` writes."""
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
