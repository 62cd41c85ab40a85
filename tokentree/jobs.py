"""A service's job as the client sees it: the JSON of `GET /v1/jobs/{id}`, typed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# models.schema's terminal statuses; written out here because the client never imports the service.
FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class JobProgress:
    nodes: int
    completed_paths: int
    frontier: int | None = None  # open nodes not yet expanded
    workers: dict[str, int] | None = None  # nodes expanded per worker


@dataclass(frozen=True)
class Job:
    """A tree, logprobs or score job: what was asked (`text`: what a score job scores), where it stands
    (`status`, `progress`) and why it failed (`error`) or may not move (`warning`, e.g. no live worker
    serves its model)."""

    id: str
    kind: str
    prompt: str
    model: str
    parameters: dict[str, Any]
    chat: bool
    prefix: str | None
    status: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress
    warning: str | None = None
    text: str | None = None
    study_id: str | None = None  # the study it is one combination of (`Client.study`)

    @property
    def done(self) -> bool:
        """Whether the job has ended: succeeded, failed or cancelled."""
        return self.status in FINISHED_STATUSES

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Job:
        progress = doc.get("progress") or {}
        return cls(
            id=str(doc["id"]), kind=doc["kind"], prompt=doc["prompt"], model=doc["model"],
            parameters=dict(doc.get("parameters") or {}), chat=bool(doc.get("chat")),
            prefix=doc.get("prefix"), status=doc["status"], error=doc.get("error"),
            created_at=_time(doc["created_at"]), started_at=_optional_time(doc.get("started_at")),
            finished_at=_optional_time(doc.get("finished_at")),
            progress=JobProgress(nodes=int(progress.get("nodes", 0)),
                                 completed_paths=int(progress.get("completed_paths", 0)),
                                 frontier=progress.get("frontier"), workers=progress.get("workers")),
            warning=doc.get("warning"), text=doc.get("text"),
            study_id=None if doc.get("study_id") is None else str(doc["study_id"]),
        )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
