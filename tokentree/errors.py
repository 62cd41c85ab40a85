"""What the client raises: the API's refusals with its own message, and a wait that ran out of time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokentree.jobs import Job
    from tokentree.studies import Study

# Where FastAPI says an error was found; the field's own name says enough.
_LOCATION_KINDS = {"body", "query", "path", "header"}


class APIError(Exception):
    """The service answered with an error: `status` is the HTTP status, `detail` the API's `detail` as
    sent (a sentence, or for a 422 FastAPI's list of `{"loc", "msg", ...}`), `message` it in one line,
    `retry_after` the seconds a 429 or 503 asks to wait (None if it does not say)."""

    def __init__(self, status: int, detail: Any, retry_after: float | None = None) -> None:
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.message = describe(detail)
        super().__init__(f"HTTP {status}: {self.message}")


def describe(detail: Any) -> str:
    """The API's `detail` in one line: validation errors as `parameters.max_nodes: must be ...`."""
    if isinstance(detail, list):
        return "; ".join(_describe_one(item) for item in detail) or "invalid request"
    return str(detail)


def _describe_one(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = [str(part) for part in item.get("loc", [])]
    if location and location[0] in _LOCATION_KINDS:
        location = location[1:]
    message = str(item.get("msg", item))
    return f"{'.'.join(location)}: {message}" if location else message


class JobTimeout(TimeoutError):
    """`Client.wait` ran out of time; `job` is the job as last seen (still queued or running)."""

    def __init__(self, job: Job, timeout: float) -> None:
        self.job = job
        super().__init__(f"job {job.id} still {job.status} after {timeout:g} s "
                         f"({job.progress.nodes} nodes so far)")


class StudyTimeout(TimeoutError):
    """`Client.wait` on a study ran out of time; `study` is the study as last seen (some jobs still open)."""

    def __init__(self, study: Study, timeout: float) -> None:
        self.study = study
        super().__init__(f"study {study.id} not done after {timeout:g} s ({study.progress.ended} of "
                         f"{study.progress.jobs} jobs ended)")
