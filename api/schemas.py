"""The API's request and response bodies (they are also the OpenAPI document at /docs)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from engine.params import LOGPROBS_PARAMETERS, TREE_PARAMETERS
from models.node_reads import JobProgress
from models.schema import Job

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]  # models.schema.JOB_STATUSES


class JobCreate(BaseModel):
    """A job to run: a token tree or a log-probability analysis of `prompt`."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr = Field(min_length=1)
    model: StrictStr | None = Field(default=None, description="from GET /v1/models; default: the first")
    kind: Literal["tree", "logprobs"] = "tree"
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="; ".join(
            f"{kind}: " + "; ".join(f"{name} ({b.meaning})" for name, b in table.items())
            for kind, table in (("tree", TREE_PARAMETERS), ("logprobs", LOGPROBS_PARAMETERS))
        ) + ". GET /v1/parameters gives each one's default and range on this server",
    )
    chat: StrictBool = Field(default=False, description="wrap the prompt in the model's chat template")
    prefix: StrictStr | None = Field(default=None, description="force the response to start with this text")


class ProgressOut(BaseModel):
    nodes: int
    frontier: int | None = Field(description="open nodes not yet expanded; null in job lists")
    completed_paths: int
    workers: dict[str, int] | None = Field(description="nodes expanded per worker; null in job lists")


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    prompt: str
    model: str
    parameters: dict[str, Any]
    chat: bool
    prefix: str | None
    status: JobStatus
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut
    warning: str | None = Field(default=None, description="why a queued or running job may not move, "
                                "e.g. \"no live worker serves model X\"; null otherwise")

    @field_validator("created_at", "started_at", "finished_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # SQLite hands back naive datetimes; they were written in UTC.
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @classmethod
    def of(cls, job: Job, progress: JobProgress, warning: str | None = None) -> JobOut:
        return cls(id=job.id, kind=job.kind, prompt=job.prompt, model=job.model, parameters=job.parameters,
                   chat=job.chat, prefix=job.prefix, status=job.status, error=job.error,  # type: ignore[arg-type]
                   created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                   progress=ProgressOut(**progress.to_json()), warning=warning)


class JobPage(BaseModel):
    items: list[JobOut]
    total: int


class PathOut(BaseModel):
    node_id: int
    text: str
    cumulative_prob: float
    tokens: list[int]


class PathsOut(BaseModel):
    paths: list[PathOut]


class ModelOut(BaseModel):
    name: str
    default: bool


class ModelsOut(BaseModel):
    models: list[ModelOut]


class ParameterOut(BaseModel):
    name: str
    type: Literal["integer", "number"]
    default: float | int = Field(description="what a request that leaves it out gets on this server")
    minimum: float | int
    maximum: float | int = Field(description="the engine's limit, or this server's cap if lower")
    description: str


class ParametersOut(BaseModel):
    """Each job kind's parameters, in the engine's order."""

    tree: list[ParameterOut]
    logprobs: list[ParameterOut]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="unavailable (503): the database or the broker does not answer; degraded (200): the API "
                    "works, but some open jobs wait for a model no live worker serves")
    database: str
    broker: str
    unserved_models: list[str] = Field(
        default_factory=list, description="models of queued or running jobs that no live worker serves")


class ErrorOut(BaseModel):
    """Every refusal that is not a validation error: 401, 404, 409, 413, 429, 503."""

    detail: str
