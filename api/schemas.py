"""The API's request and response bodies (they are also the OpenAPI document at /docs)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from tokentree.engine.params import LOGPROBS_PARAMETERS, SCORE_PARAMETERS, TREE_PARAMETERS
from tokentree.models.node_reads import JobProgress
from tokentree.models.schema import Job

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]  # models.schema.JOB_STATUSES


class JobCreate(BaseModel):
    """A job to run: a token tree or a log-probability analysis of `prompt`."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr = Field(min_length=1)
    model: StrictStr | None = Field(default=None, description="from GET /v1/models; default: the first")
    kind: Literal["tree", "logprobs", "score"] = "tree"
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="; ".join(
            f"{kind}: " + "; ".join(f"{name} ({b.meaning})" for name, b in table.items())
            for kind, table in (("tree", TREE_PARAMETERS), ("logprobs", LOGPROBS_PARAMETERS),
                                ("score", SCORE_PARAMETERS))
        ) + ". GET /v1/parameters gives each one's default and range on this server",
    )
    chat: StrictBool = Field(default=False, description="wrap the prompt in the model's chat template")
    prefix: StrictStr | None = Field(default=None, description="force the response to start with this text")
    text: StrictStr | None = Field(default=None, description="score jobs only (and required there): the text "
                                   "scored token by token as the continuation of the prompt (and prefix)")


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
    text: str | None = Field(default=None, description="the text a score job scores; null for other kinds")
    status: JobStatus
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut
    warning: str | None = Field(default=None, description="why a queued or running job may not move, "
                                "e.g. \"no live worker serves model X\"; null otherwise")
    study_id: uuid.UUID | None = Field(default=None, description="the study it belongs to (/v1/studies)")
    growths: list[dict[str, Any]] = Field(
        default_factory=list,
        description="a tree job's growths in place (POST /v1/jobs/{id}/expand), oldest first: node_id, "
                    "token_id (null: the node itself, more), parameters, by (API key id), at, start_node_id, "
                    "prob_source, nodes_before/after, completed_before/after")

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
                   text=job.text, created_at=job.created_at, started_at=job.started_at,
                   finished_at=job.finished_at, progress=ProgressOut(**progress.to_json()), warning=warning,
                   study_id=job.study_id, growths=job.growths or [])


class GrowthCreate(BaseModel):
    """Grow an ended tree job in place from one of its nodes."""

    model_config = ConfigDict(extra="forbid")

    node_id: StrictInt = Field(ge=0, le=2**62,
                               description="a node of the job's tree (its id in the tree JSON)")
    token_id: StrictInt | None = Field(
        default=None, ge=0, le=2**62,
        description="one of the node's recorded candidates, to grow as a new child; leave it out to grow the "
                    "node itself further (a leaf the depth limit or another limit left unexpanded)")
    parameters: dict[str, Any] | None = Field(
        default=None, description="tree parameters for this growth, over the job's own (GET /v1/parameters); "
                                  "max_nodes, max_completed_paths and max_depth count from where it starts")


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
    type: Literal["integer", "number", "boolean"]
    default: bool | int | float = Field(description="what a request that leaves it out gets on this server")
    minimum: float | int
    exclusive_minimum: bool = Field(False, description="true when the value must be greater than `minimum`")
    maximum: float | int = Field(description="the engine's limit, or this server's cap if lower")
    description: str


class ParametersOut(BaseModel):
    """Each job kind's parameters, in the engine's order."""

    tree: list[ParameterOut]
    logprobs: list[ParameterOut]
    score: list[ParameterOut]


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


# -- studies ----------------------------------------------------------------------------------------

TemplateValue = StrictStr | StrictInt | StrictFloat


def _one_empty_set() -> list[dict[str, Any]]:
    return [{}]


class StudyCreate(BaseModel):
    """Many jobs as one question: every combination of its prompts (a list, or a template filled from a
    table of values), its models and its parameter sets."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=200)
    prompts: list[Annotated[StrictStr, Field(min_length=1)]] | None = Field(default=None, min_length=1,
                                            description="the prompts; or give `template` and `values`")
    template: StrictStr | None = Field(default=None, min_length=1,
                                       description='a prompt with {name} fields, e.g. "The {animal} sat on '
                                                   'the"; `values` fills them, one prompt per row')
    values: list[dict[str, TemplateValue]] | None = Field(
        default=None, min_length=1, description='rows of field values, e.g. [{"animal": "cat"}]')
    models: list[StrictStr] | None = Field(default=None, min_length=1,
                                           description="from GET /v1/models; default: the first")
    kind: Literal["tree", "logprobs"] = "tree"
    parameter_sets: list[dict[str, Any]] = Field(
        default_factory=_one_empty_set, min_length=1,
        description="each one the `parameters` of a job (GET /v1/parameters); default: one empty set")
    chat: StrictBool = Field(default=False, description="wrap each prompt in the model's chat template")
    prefix: StrictStr | None = Field(default=None, description="force every response to start with this")


class StudyProgressOut(BaseModel):
    jobs: int
    by_status: dict[str, int] = Field(description="jobs in each status, every status present")
    nodes: int
    completed_paths: int


class StudyOut(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    request: dict[str, Any] = Field(description="the request the study was made from")
    done: bool = Field(description="every job has ended (succeeded, failed or cancelled)")
    progress: StudyProgressOut
    jobs: list[JobOut] | None = Field(
        default=None,
        description="its jobs, in the order of its combinations (prompts, then models, then parameter sets); "
                    "null in lists")

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StudyPage(BaseModel):
    items: list[StudyOut]
    total: int


class CandidateOut(BaseModel):
    """A next token seen at a node, as the tree JSON shows it (with whatever else the tree records)."""

    model_config = ConfigDict(extra="allow")

    token_id: int | None = None
    text: str
    prob: float


class ForkOut(BaseModel):
    """A fork point: an expanded node of one of the study's trees with more than one child."""

    job_id: uuid.UUID
    node_id: int
    prompt: str
    model: str
    parameters: dict[str, Any]
    path_text: str = Field(description="what the path says after the prompt: the job's forced prefix, then "
                                       "the tokens down to the fork")
    depth: int
    prob: float
    cumulative_prob: float
    entropy: float | None = Field(description="of the next-token distribution at the fork, in nats")
    branches: int = Field(description="children the tree expanded there")
    unexplored_mass: float = Field(description="1 - the sum of the children's probabilities")
    candidates: list[CandidateOut] = Field(description="the next tokens seen there, most probable first")


class ForksOut(BaseModel):
    by: Literal["entropy", "branches", "unexplored_mass"]
    forks: list[ForkOut]
