"""A service's study as the client sees it: the JSON of `GET /v1/studies/{id}`, typed; and its fork
points as a table.

A study is many jobs asked as one question: every combination of its prompts, models and parameter sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokentree.jobs import Job

# The columns of `forks_table`, in order (the API's fork fields; candidates stay a list per row).
FORK_COLUMNS = ("job_id", "node_id", "prompt", "path_text", "entropy", "branches", "unexplored_mass", "depth",
                "prob", "cumulative_prob", "model", "parameters", "candidates")


@dataclass(frozen=True)
class StudyProgress:
    """A study's jobs together: how many, how many in each status, their nodes and completed paths."""

    jobs: int
    by_status: dict[str, int]
    nodes: int
    completed_paths: int

    @property
    def ended(self) -> int:
        """Jobs that have ended: succeeded, failed or cancelled."""
        return self.jobs - self.by_status.get("queued", 0) - self.by_status.get("running", 0)


@dataclass(frozen=True)
class Study:
    """A study: its name, the request it was made from, where its jobs stand together (`progress`,
    `done`), and its jobs (None where the server lists studies without them)."""

    id: str
    name: str
    created_at: datetime
    request: dict[str, Any]
    done: bool
    progress: StudyProgress
    jobs: list[Job] | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Study:
        progress = doc["progress"]
        return cls(
            id=str(doc["id"]), name=doc["name"], created_at=datetime.fromisoformat(doc["created_at"]),
            request=dict(doc.get("request") or {}), done=bool(doc["done"]),
            progress=StudyProgress(
                jobs=int(progress["jobs"]), by_status=dict(progress["by_status"]),
                nodes=int(progress["nodes"]), completed_paths=int(progress["completed_paths"])),
            jobs=None if doc.get("jobs") is None else [Job.from_json(job) for job in doc["jobs"]],
        )


def forks_table(forks: list[dict[str, Any]]) -> Any:
    """The API's forks as a pandas DataFrame (one row per fork, `FORK_COLUMNS`), or as the list of dicts
    itself where pandas is not installed."""
    try:
        import pandas as pd
    except ImportError:
        return forks
    return pd.DataFrame([{column: fork.get(column) for column in FORK_COLUMNS} for fork in forks],
                        columns=list(FORK_COLUMNS))
