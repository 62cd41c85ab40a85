"""Tables. Postgres is the system of record; SQLite serves the one-process embedded mode.

A node is identified by (job, parent, token): writing the same node twice (a redelivered batch) hits
the unique key and stays one row. The root, the only node without a parent, has its own unique index.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import ColumnElement

JOB_KINDS = ("tree", "logprobs", "score")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

JSONDoc = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets a 64-bit identity.
NodeId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_now() -> ColumnElement[datetime]:
    """The database's clock, read as the statement runs: every time written to a job or a node, and every
    age the sweeper compares, is on this one clock, whatever the clock of the host writing it says.
    `clock_timestamp()`, not `now()` (its transaction's start): a step's transaction may have waited for
    the job's row lock. SQLite, the one-process mode, has the function from `models.db`."""
    return func.clock_timestamp(type_=DateTime(timezone=True))


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"kind IN {JOB_KINDS}", name="job_kind"),
        CheckConstraint(f"status IN {JOB_STATUSES}", name="job_status"),
        Index("ix_jobs_created", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_model_status", "model", "status"),  # /healthz: does a model have open jobs?
        Index("ix_jobs_owner_created", "owner", "created_at"),
        Index("uq_jobs_idempotency_key", "idempotency_key", unique=True),
        Index("ix_jobs_study", "study_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    chat: Mapped[bool] = mapped_column(Boolean, default=False)
    prefix: Mapped[str | None] = mapped_column(Text)
    # The text a score job scores as the prompt's continuation; None for the other kinds.
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(64))  # the API key's id that submitted it
    # The submission's Idempotency-Key, scoped to its owner (`models.jobs.idempotency_scope`): a retried
    # submission finds this job instead of making a second one.
    idempotency_key: Mapped[str | None] = mapped_column(String(400))
    # The fingerprint of the model the first worker built it with (`engine.loading.model_fingerprint`):
    # a worker whose model differs refuses the job's nodes, so a tree is never built by two models.
    model_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Counts kept with the job so listing jobs never scans nodes.
    node_count: Mapped[int] = mapped_column(Integer, default=0)
    completed_paths: Mapped[int] = mapped_column(Integer, default=0)
    # Job-kind specific output: the logprobs or score record, or a tree's expansion statistics.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    # A tree job's growths in place, oldest first (`models.growths`, `engine.growth.GrowthRecord`); None:
    # never grown. The last one is the job's current run when it has run since.
    growths: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    # The study it is one combination of (`Study`); None for a job submitted on its own.
    study_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("studies.id", ondelete="CASCADE", name="fk_jobs_study_id"))


class NodeRow(Base):
    __tablename__ = "nodes"
    __table_args__ = (
        Index("uq_nodes_job_parent_token", "job_id", "parent_id", "token_id", unique=True),
        Index(
            "uq_nodes_job_root",
            "job_id",
            unique=True,
            postgresql_where=text("parent_id IS NULL"),
            sqlite_where=text("parent_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(NodeId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(NodeId)
    token_id: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    depth: Mapped[int] = mapped_column(Integer)
    prob: Mapped[float] = mapped_column(Double)
    logprob: Mapped[float] = mapped_column(Double)
    cumulative_prob: Mapped[float] = mapped_column(Double)
    # The model's own probability of the token, before the sampler (`prob` is the sampler's); NULL in
    # rows written before migration 0007: the same as `prob`.
    raw_prob: Mapped[float | None] = mapped_column(Double)
    raw_logprob: Mapped[float | None] = mapped_column(Double)
    token_bytes: Mapped[bytes | None] = mapped_column(LargeBinary)  # where `text` is not valid UTF-8 alone
    is_finished: Mapped[bool] = mapped_column(Boolean, default=False)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # stop | max_depth
    # Set when the node is expanded: the candidates seen and the rule's inputs. The candidates are kept as
    # the JSON text the tree shows (`engine.tree.candidates_json`), so serving a tree never re-encodes them.
    candidates: Mapped[str | None] = mapped_column(Text)
    threshold: Mapped[float | None] = mapped_column(Double)
    queue_depth: Mapped[int | None] = mapped_column(Integer)
    entropy: Mapped[float | None] = mapped_column(Double)
    unexplored_mass: Mapped[float | None] = mapped_column(Double)  # 1 - the children's probabilities
    expanded_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())


class Study(Base):
    """Many jobs asked as one question: every combination of its prompts, models and parameter sets
    (`jobs.study_id`). `request` is the request it was made from, as the API accepted it."""

    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_created", "created_at"),
        Index("ix_studies_owner_created", "owner", "created_at"),
        Index("uq_studies_idempotency_key", "idempotency_key", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(64))  # the API key's id, as `jobs.owner`
    request: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    idempotency_key: Mapped[str | None] = mapped_column(String(400))  # scoped, as `jobs.idempotency_key`
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())


class ApiKey(Base):
    """A client's key. Only the SHA-256 of the token is kept; `prefix` is its first characters, to tell
    keys apart in lists. A revoked key stays (its jobs keep their owner) but opens nothing."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("uq_api_keys_hash", "hash", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
