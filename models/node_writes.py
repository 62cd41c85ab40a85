"""The write side of a job's nodes: the root, and each expansion step's effects, in bulk and idempotently.

One step of a worker pops some open nodes: it expands some (their candidates and the rule's inputs,
plus new children) and finishes others (stop token or depth limit). `write_step` records a step in one
transaction that

- locks the job's row first, so the steps of all workers on a job serialize and the job's counts and
  limits (max_nodes, max_completed_paths) are checked against committed numbers, never raced;
- writes nothing unless the job is still running (a cancel committed before is final);
- applies a pop only to a node still open in the database (`threshold IS NULL AND NOT is_finished`):
  a step redone after a crash, or by a second worker that took over an expired lease, changes nothing
  and reports that the node was already done, so every node is expanded exactly once;
- inserts children with `ON CONFLICT (job_id, parent_id, token_id) DO NOTHING` (the schema's natural
  key) and looks up any that already existed, so a redelivered write maps to the same rows.

Postgres gets one statement per kind of write, its rows in one JSON document (no per-row round
trips); SQLite, the embedded mode's single writer, gets SQLAlchemy's batched statements.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import orjson
from sqlalchemy import CursorResult, Table, bindparam, case, func, insert, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tokentree.engine.tree import Coverage, unexplored_mass
from tokentree.models.jobs import JOBS, OPEN_STATUSES, JobId, add_counts, as_job_id
from tokentree.models.schema import Job, NodeRow, db_now

NODES = cast(Table, NodeRow.__table__)


@dataclass(frozen=True)
class NewChild:
    """A child a step creates, best first within its parent."""

    token_id: int
    text: str
    prob: float  # the sampler's
    logprob: float
    cumulative_prob: float
    raw_prob: float | None = None  # the model's own (None: the same as prob)
    raw_logprob: float | None = None
    token_bytes: bytes | None = None  # where `text` is not valid UTF-8 on its own


@dataclass(frozen=True)
class Expansion:
    """A popped node that was expanded: what the model saw next, the rule's inputs, and its children.
    `unexplored_mass` is for these children (a write that keeps fewer, under max_nodes, recomputes it)."""

    node_id: int
    depth: int
    candidates_json: str  # as the tree JSON shows them: `engine.tree.candidates_json`
    threshold: float
    queue_depth: int
    entropy: float | None
    children: list[NewChild]
    unexplored_mass: float | None = None


@dataclass(frozen=True)
class Finish:
    """A popped node that ends its path: at a stop token (a completed path) or at the depth limit.

    A node created by an expansion of the same step (it has no id yet) is named by its parent's id and
    its token instead of `node_id`.
    """

    node_id: int | None
    reason: Literal["stop", "max_depth"]
    parent_id: int | None = None
    token_id: int | None = None


Pop = Expansion | Finish


@dataclass(frozen=True)
class Limits:
    max_nodes: int
    max_completed_paths: int


@dataclass
class StepWritten:
    """What `write_step` did. `status` other than "running" means nothing was written."""

    status: str | None
    node_count: int = 0
    completed_paths: int = 0
    # Per pop, in order: "applied", "done" (the node was no longer open: written before, by a redone
    # step or another worker) or "skipped" (a limit was reached before this pop).
    outcomes: list[str] = field(default_factory=list)
    # Per pop: the database ids of the children written for it (fewer than asked if max_nodes cut them).
    child_ids: list[list[int]] = field(default_factory=list)
    # Children written already finished (created and popped in this step): not open.
    finished_children: set[int] = field(default_factory=set)

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class OpenNode:
    """A node as a worker needs it to continue the tree from it."""

    id: int
    parent_id: int | None
    token_id: int | None
    text: str
    depth: int
    prob: float
    logprob: float
    cumulative_prob: float
    is_finished: bool
    is_expanded: bool

    @property
    def is_open(self) -> bool:
        return not self.is_finished and not self.is_expanded


def _json(value: Any) -> str:
    # orjson: a step's documents are large, and encoding them was the writer thread's biggest cost in
    # Python (it competes with the model's thread for the GIL).
    return orjson.dumps(value).decode()


def storable_text(text: str) -> str:
    """`text` as a database can keep it: Postgres text holds no NUL character (a byte-level tokenizer
    can produce one), so it becomes U+FFFD, as undecodable bytes do."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- the root -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeStart:
    """A tree job as a unit of work finds it when it starts on it."""

    node_count: int
    completed_paths: int
    started_at: datetime  # the first unit's start
    root: OpenNode | None  # the root, when this start inserted it (a fresh job: nothing else is open)


def start_tree(session: Session, job_id: JobId, prompt: str) -> TreeStart | None:
    """Mark the job running (queued -> running; `started_at` keeps the first start) and give it its root,
    the prompt, if it has none: one transaction. None when the job is finished, cancelled or gone (the
    caller must not touch it). Commits.

    The UPDATE holds the job's row lock until the commit, so two starts of one job serialize and the
    second finds the root counted (a job's count is 0 exactly when it has no root).
    """
    key = as_job_id(job_id)
    job = JOBS.c  # Core statements: the ORM's bookkeeping costs more than a worker's round trip here
    row = session.execute(
        update(JOBS)
        .where(job.id == key, job.status.in_(OPEN_STATUSES))
        .values(status="running", started_at=func.coalesce(job.started_at, db_now()))
        .returning(job.node_count, job.completed_paths, job.started_at)
    ).one_or_none()
    if row is None:
        session.commit()
        return None
    node_count, completed_paths, started_at = row
    root = None
    if node_count == 0:
        root_id = session.scalar(
            insert(NODES)
            .values(job_id=key, parent_id=None, token_id=None, text=prompt, depth=0, prob=1.0, logprob=0.0,
                    cumulative_prob=1.0, is_finished=False)
            .returning(NODES.c.id)
        )
        add_counts(session, key, nodes=1)
        node_count = 1
        root = OpenNode(id=int(root_id), parent_id=None, token_id=None, text=prompt, depth=0, prob=1.0,
                        logprob=0.0, cumulative_prob=1.0, is_finished=False, is_expanded=False)
    session.commit()
    assert started_at is not None  # set by the UPDATE
    if started_at.tzinfo is None:  # SQLite keeps no time zone; we write UTC
        started_at = started_at.replace(tzinfo=UTC)
    return TreeStart(node_count, completed_paths, started_at, root)


# -- a step -------------------------------------------------------------------------------------------


def _lock_job(session: Session, job_id: uuid.UUID) -> tuple[str, int, int] | None:
    """Lock the job's row for this transaction; its status and counts, or None if it is gone.

    On Postgres the same round trip turns nested loops off for the rest of the transaction (see
    `_BY_ID_STILL_OPEN`): a step is several statements, and each costs the writer a round trip.
    """
    columns: list[Any] = [Job.status, Job.node_count, Job.completed_paths]
    if _is_postgres(session):
        columns.append(func.set_config("enable_nestloop", "off", True))  # SET LOCAL
    row = session.execute(select(*columns).where(Job.id == job_id).with_for_update()).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


def write_step(
    session: Session, job_id: JobId, pops: Sequence[Pop], limits: Limits, worker: str
) -> StepWritten:
    """Record one step's pops, in pop order, in one transaction (see the module docstring). Commits.

    Optimistic first: every popped node is taken to be open, and the conditional updates report which
    were. Only when one was not (a redone step; rare) is the step redone against the nodes' states.
    """
    key = as_job_id(job_id)
    try:
        written = _write_step(session, key, pops, limits, worker, None)
        if written is None:
            session.rollback()
            still_open = _open_among(session, key, [p.node_id for p in pops if p.node_id is not None])
            written = _write_step(session, key, pops, limits, worker, still_open)
        assert written is not None
        if written.running:
            session.commit()
        else:
            session.rollback()
        return written
    except BaseException:
        session.rollback()
        raise


@dataclass(frozen=True)
class StepToWrite:
    """One step of one job, for `write_steps`."""

    job_id: JobId
    pops: Sequence[Pop]
    limits: Limits
    worker: str


def write_steps(session: Session, steps: Sequence[StepToWrite]) -> list[StepWritten]:
    """Record the steps of many jobs (a worker's batch) in one transaction, one commit for all.

    On Postgres each kind of write is one statement for the whole batch (`_write_together`), and the
    jobs are locked in id order, so two workers' batches never wait on each other in a cycle. Whenever
    that path meets a surprise (a node no longer open, a child written before: a redone step; rare), or
    on SQLite, the batch is rolled back and each step is written by `write_step` alone.
    """
    try:
        written = _write_together(session, steps) if _is_postgres(session) and len(steps) > 1 else None
        if written is None:
            session.rollback()
            return [write_step(session, s.job_id, s.pops, s.limits, s.worker) for s in steps]
        session.commit()
        return written
    except BaseException:
        session.rollback()
        raise


def _write_together(session: Session, steps: Sequence[StepToWrite]) -> list[StepWritten] | None:
    """The batch's writes, uncommitted, in five statements; None when a step was not what it seemed."""
    keys = [as_job_id(s.job_id) for s in steps]
    locked = {
        row[0]: (row[1], row[2], row[3])
        for row in session.execute(
            select(Job.id, Job.status, Job.node_count, Job.completed_paths,
                   func.set_config("enable_nestloop", "off", True))  # see `_lock_job`
            .where(Job.id.in_(set(keys))).order_by(Job.id).with_for_update()
        )
    }
    # Plans in the batch's order, each on its job's counts after the steps before it (a worker may run
    # two units of one job).
    counts = {key: (row[1], row[2]) for key, row in locked.items()}
    plans: list[_StepPlan | None] = []
    for key, step in zip(keys, steps, strict=True):
        if key not in locked or locked[key][0] != "running":
            plans.append(None)
            continue
        plan = _plan_step(step.pops, step.limits, *counts[key], None)
        counts[key] = (plan.node_count, plan.completed)
        plans.append(plan)
    running = [(key, step, plan) for key, step, plan in zip(keys, steps, plans, strict=True)
               if plan is not None]

    expansions = [(key, p, step.worker) for key, step, plan in running for p in plan.applied
                  if isinstance(p, Expansion)]
    if expansions and not _changed_exactly(session.execute(
        text(
            "UPDATE nodes AS n SET candidates = u.candidates, threshold = u.threshold, "
            "queue_depth = u.queue_depth, entropy = u.entropy, unexplored_mass = u.unexplored_mass, "
            "expanded_by = u.worker "
            "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(id bigint, candidates text, "
            "threshold float8, queue_depth int, entropy float8, unexplored_mass float8, worker text) "
            f"WHERE {_BY_ID_STILL_OPEN}, n.id"
        ),
        {"rows": _json([{"id": e.node_id, "candidates": e.candidates_json, "threshold": e.threshold,
                         "queue_depth": e.queue_depth, "entropy": e.entropy,
                         "unexplored_mass": e.unexplored_mass, "worker": worker}
                        for _, e, worker in expansions]),
         "ids": [e.node_id for _, e, _ in expansions]},
    ), {e.node_id: key for key, e, _ in expansions}):
        return None

    rows = [{"job_id": str(key), **_json_child(r)} for key, _, plan in running for r in plan.children]
    inserted: dict[tuple[uuid.UUID, int | None, int | None], int] = {}
    if rows:
        returned = session.execute(
            text(
                f"INSERT INTO nodes (job_id, {_CHILD_INSERTED}, is_finished, created_at) "
                f"SELECT u.job_id, {_CHILD_SELECTED}, false, clock_timestamp() "
                f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(job_id uuid, {_CHILD_RECORD}) "
                "ON CONFLICT (job_id, parent_id, token_id) DO NOTHING "
                "RETURNING id, job_id, parent_id, token_id"
            ),
            {"rows": _json(rows)},
        )
        inserted = {(job, parent, token): node_id for node_id, job, parent, token in returned}
    if len(inserted) != len(rows):
        return None  # some children existed already: a redone step

    finishes = [(key, p.node_id if p.node_id is not None else inserted[(key, p.parent_id, p.token_id)],
                 p.reason)
                for key, _, plan in running for p in plan.applied if isinstance(p, Finish)]
    if finishes and not _changed_exactly(session.execute(
        text(
            "UPDATE nodes AS n SET is_finished = true, finish_reason = u.reason "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[])) AS u(id, reason) "
            f"WHERE {_BY_ID_STILL_OPEN}, n.id"
        ),
        {"ids": [node_id for _, node_id, _ in finishes], "reasons": [reason for _, _, reason in finishes]},
    ), {node_id: key for key, node_id, _ in finishes}):
        return None

    added: dict[uuid.UUID, tuple[int, int]] = {}
    for key, _, plan in running:
        nodes, completed = added.get(key, (0, 0))
        added[key] = (nodes + plan.added_nodes, completed + plan.added_completed)
    session.execute(
        text(
            "UPDATE jobs AS j SET node_count = j.node_count + u.nodes, "
            "completed_paths = j.completed_paths + u.completed "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:nodes AS int[]), CAST(:completed AS int[])) "
            "AS u(id, nodes, completed) WHERE j.id = u.id"
        ),
        {"ids": [str(key) for key in added], "nodes": [n for n, _ in added.values()],
         "completed": [c for _, c in added.values()]},
    )
    return [
        StepWritten(status=locked[key][0] if key in locked else None) if plan is None
        else plan.written([inserted[(key, r["parent_id"], r["token_id"])] for r in plan.children])
        for key, plan in zip(keys, plans, strict=True)
    ]


def _changed_exactly(result: Any, expected: dict[int, uuid.UUID]) -> bool:
    """Whether an update (returning job id and node id) changed exactly the expected nodes."""
    changed = {node_id: job for job, node_id in result}
    if any(expected.get(node_id) != job for node_id, job in changed.items()):
        raise ValueError("a step named nodes of another job")
    return len(changed) == len(expected)


def _write_step(session: Session, key: uuid.UUID, pops: Sequence[Pop], limits: Limits, worker: str,
                still_open: set[int] | None) -> StepWritten | None:
    """The step's writes, uncommitted; None when `still_open` was guessed (None) and the guess was wrong."""
    locked = _lock_job(session, key)
    if locked is None or locked[0] != "running":
        return StepWritten(status=None if locked is None else locked[0])
    plan = _plan_step(pops, limits, locked[1], locked[2], still_open)
    ids = _write_plan(session, key, plan, worker, guessed=still_open is None)
    return None if ids is None else plan.written(ids)


@dataclass
class _StepPlan:
    """What a step writes, decided under the job's lock: per pop an outcome, per expansion the children
    that fit under max_nodes, and the job's counts after it."""

    pops: Sequence[Pop]
    outcomes: list[str]
    grants: list[int]
    node_count: int
    completed: int
    added_nodes: int
    added_completed: int

    @property
    def applied(self) -> list[Pop]:
        return [p for p, o in zip(self.pops, self.outcomes, strict=True) if o == "applied"]

    @functools.cached_property
    def children(self) -> list[dict[str, Any]]:
        """The rows to insert, in pop order and best first (ids grow in this order), each with the finish
        it gets in this same step, if any."""
        finished_now = {(p.parent_id, p.token_id): p.reason for p in self.applied
                        if isinstance(p, Finish) and p.node_id is None}
        rows: list[dict[str, Any]] = []
        for pop, granted in zip(self.pops, self.grants, strict=True):
            if isinstance(pop, Expansion):
                rows.extend(
                    dict(parent_id=pop.node_id, token_id=c.token_id, text=storable_text(c.text),
                         depth=pop.depth + 1,
                         prob=c.prob, logprob=c.logprob, cumulative_prob=c.cumulative_prob,
                         raw_prob=c.raw_prob, raw_logprob=c.raw_logprob, token_bytes=c.token_bytes,
                         finish_reason=finished_now.get((pop.node_id, c.token_id)))
                    for c in pop.children[:granted]
                )
        return rows

    def written(self, ids: list[int]) -> StepWritten:
        child_ids: list[list[int]] = []
        cursor = 0
        for granted in self.grants:
            child_ids.append(ids[cursor : cursor + granted])
            cursor += granted
        rows = self.children
        finished = {i for row, i in zip(rows, ids, strict=True) if row["finish_reason"] is not None}
        return StepWritten(status="running", node_count=self.node_count, completed_paths=self.completed,
                           outcomes=self.outcomes, child_ids=child_ids, finished_children=finished)


def _plan_step(pops: Sequence[Pop], limits: Limits, node_count: int, completed: int,
               still_open: set[int] | None) -> _StepPlan:
    outcomes: list[str] = []
    grants: list[int] = []
    planned: list[Pop] = []  # the pops, an expansion cut short by max_nodes with its mass for what is kept
    start_nodes, start_completed = node_count, completed
    granted_children: set[tuple[int, int]] = set()  # (parent id, token) written in this step
    for pop in pops:
        planned.append(pop)
        # The rule checks its limits before every pop; once one is reached the tree is done.
        if node_count >= limits.max_nodes or completed >= limits.max_completed_paths:
            outcomes.append("skipped")
            grants.append(0)
        elif isinstance(pop, Finish) and pop.node_id is None:
            fresh = (pop.parent_id, pop.token_id) in granted_children
            outcomes.append("applied" if fresh else "skipped")
            grants.append(0)
            completed += fresh and pop.reason == "stop"
        elif still_open is not None and pop.node_id not in still_open:
            outcomes.append("done")
            grants.append(0)
        elif isinstance(pop, Expansion):
            outcomes.append("applied")
            granted = min(len(pop.children), limits.max_nodes - node_count)
            grants.append(granted)
            if granted < len(pop.children):
                kept = pop.children[:granted]
                planned[-1] = dataclasses.replace(pop, children=kept,
                                                  unexplored_mass=unexplored_mass([c.prob for c in kept]))
            node_count += granted
            granted_children.update((pop.node_id, c.token_id) for c in pop.children[:granted])
        else:
            outcomes.append("applied")
            grants.append(0)
            completed += pop.reason == "stop"
    return _StepPlan(planned, outcomes, grants, node_count, completed, node_count - start_nodes,
                     completed - start_completed)


def _write_plan(
    session: Session, key: uuid.UUID, plan: _StepPlan, worker: str, guessed: bool
) -> list[int] | None:
    """The step's writes: expansions, children, finishes (children finished in this same step are
    inserted open, then finished), counts. The new children's ids in plan order; None if `guessed` and a
    node was not open after all."""
    applied = plan.applied
    changed = _record_expansions(session, key, [p for p in applied if isinstance(p, Expansion)], worker)
    rows = plan.children
    ids = _insert_children(session, key, rows)
    new_ids = {(r["parent_id"], r["token_id"]): i for r, i in zip(rows, ids, strict=True)}
    finishes = [p if p.node_id is not None else
                Finish(node_id=new_ids[(p.parent_id, p.token_id)], reason=p.reason)
                for p in applied if isinstance(p, Finish)]
    changed += _record_finishes(session, key, finishes)
    if changed != len(applied):
        if guessed:
            return None
        raise RuntimeError(f"job {key}: nodes changed under the job's lock")  # cannot happen: we hold it
    add_counts(session, key, nodes=plan.added_nodes, completed_paths=plan.added_completed)
    return ids


def _open_among(session: Session, job_id: uuid.UUID, node_ids: Sequence[int]) -> set[int]:
    if not node_ids:
        return set()
    found = session.scalars(
        select(NodeRow.id).where(NodeRow.job_id == job_id, NodeRow.id.in_(node_ids),
                                 NodeRow.threshold.is_(None), NodeRow.is_finished.is_(False))
    )
    return set(found)


# Updates find their rows by primary key (`n.id = ANY(:ids)`) and join them with the new values by
# hashing (nested loops are off in a step's transaction, see `_lock_job`). The planner would otherwise
# nest the values, a function scan it estimates at 100 rows, inside the scan of the rows and re-read them
# for each: once statistics say few of a job's nodes are open, a step takes seconds instead of
# milliseconds. The job is checked on the rows returned, not in the WHERE, for the same reason.
_BY_ID_STILL_OPEN = "n.id = u.id AND n.id = ANY(CAST(:ids AS bigint[])) AND n.threshold IS NULL " \
                    "AND NOT n.is_finished RETURNING n.job_id"


def _changed_rows(result: Any, job_id: uuid.UUID) -> int:
    jobs_seen = result.scalars().all()
    if any(seen != job_id for seen in jobs_seen):
        raise ValueError(f"a step of job {job_id} named nodes of another job")
    return len(jobs_seen)


def _record_expansions(
    session: Session, job_id: uuid.UUID, expansions: Sequence[Expansion], worker: str
) -> int:
    """Record expansions of nodes still open; how many were."""
    if not expansions:
        return 0
    if _is_postgres(session):
        # One JSON document per statement: the server parses it faster than psycopg quotes text arrays.
        result = session.execute(
            text(
                "UPDATE nodes AS n SET candidates = u.candidates, threshold = u.threshold, "
                "queue_depth = u.queue_depth, entropy = u.entropy, unexplored_mass = u.unexplored_mass, "
                "expanded_by = :worker "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(id bigint, candidates text, "
                "threshold float8, queue_depth int, entropy float8, unexplored_mass float8) "
                f"WHERE {_BY_ID_STILL_OPEN}"
            ),
            {"rows": _json([{"id": e.node_id, "candidates": e.candidates_json, "threshold": e.threshold,
                             "queue_depth": e.queue_depth, "entropy": e.entropy,
                             "unexplored_mass": e.unexplored_mass} for e in expansions]),
             "ids": [e.node_id for e in expansions], "worker": worker},
        )
        return _changed_rows(result, job_id)
    nodes = NODES  # Core, not the ORM's bulk update (which wants primary keys by name)
    result = session.execute(
        update(nodes)
        .where(nodes.c.id == bindparam("b_id"), nodes.c.threshold.is_(None), nodes.c.is_finished.is_(False))
        .values(candidates=bindparam("b_candidates"), threshold=bindparam("b_threshold"),
                queue_depth=bindparam("b_queue_depth"), entropy=bindparam("b_entropy"),
                unexplored_mass=bindparam("b_unexplored_mass"), expanded_by=worker),
        [{"b_id": e.node_id, "b_candidates": e.candidates_json, "b_threshold": e.threshold,
          "b_queue_depth": e.queue_depth, "b_entropy": e.entropy, "b_unexplored_mass": e.unexplored_mass}
         for e in expansions],
    )
    return _rowcount(result)


def _record_finishes(session: Session, job_id: uuid.UUID, finishes: Sequence[Finish]) -> int:
    """Record finishes of nodes still open; how many were."""
    if not finishes:
        return 0
    if _is_postgres(session):
        result = session.execute(
            text(
                "UPDATE nodes AS n SET is_finished = true, finish_reason = u.reason "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[])) AS u(id, reason) "
                f"WHERE {_BY_ID_STILL_OPEN}"
            ),
            {"ids": [f.node_id for f in finishes], "reasons": [f.reason for f in finishes]},
        )
        return _changed_rows(result, job_id)
    nodes = NODES
    result = session.execute(
        update(nodes)
        .where(nodes.c.id == bindparam("b_id"), nodes.c.threshold.is_(None), nodes.c.is_finished.is_(False))
        .values(is_finished=True, finish_reason=bindparam("b_reason")),
        [{"b_id": f.node_id, "b_reason": f.reason} for f in finishes],
    )
    return _rowcount(result)


_CHILD_COLUMNS = ("parent_id", "token_id", "text", "depth", "prob", "logprob", "cumulative_prob", "raw_prob",
                  "raw_logprob", "token_bytes")
# A child row in Postgres' JSON documents: its columns, typed; bytes travel as hex (JSON has no bytes).
_CHILD_RECORD = ("parent_id bigint, token_id int, text text, depth int, prob float8, logprob float8, "
                 "cumulative_prob float8, raw_prob float8, raw_logprob float8, token_bytes text")
_CHILD_INSERTED = ", ".join(_CHILD_COLUMNS)
_CHILD_SELECTED = ", ".join(f"u.{name}" for name in _CHILD_COLUMNS if name != "token_bytes") + \
    ", decode(u.token_bytes, 'hex')"


def _json_child(row: dict[str, Any]) -> dict[str, Any]:
    """A child row for a Postgres JSON document."""
    child = {name: row[name] for name in _CHILD_COLUMNS}
    if child["token_bytes"] is not None:
        child["token_bytes"] = child["token_bytes"].hex()
    return child


def _insert_children(session: Session, job_id: uuid.UUID, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows (in order: ids grow in the order given, so children keep best-first order by id);
    their ids in the same order, whether inserted now or found from an earlier write."""
    if not rows:
        return []
    if _is_postgres(session):
        returned = session.execute(
            text(
                f"INSERT INTO nodes (job_id, {_CHILD_INSERTED}, is_finished, created_at) "
                f"SELECT :job_id, {_CHILD_SELECTED}, false, clock_timestamp() "
                f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u({_CHILD_RECORD}) "
                "ON CONFLICT (job_id, parent_id, token_id) DO NOTHING "
                "RETURNING id, parent_id, token_id"
            ),
            {"job_id": job_id, "rows": _json([_json_child(r) for r in rows])},
        ).all()
        by_key = {(parent, token): node_id for node_id, parent, token in returned}
    else:
        by_key = _insert_children_sqlite(session, job_id, rows)
    missing = [(r["parent_id"], r["token_id"]) for r in rows if (r["parent_id"], r["token_id"]) not in by_key]
    if missing:  # written before (a redone step): the existing rows are the children
        found = session.execute(
            select(NodeRow.id, NodeRow.parent_id, NodeRow.token_id)
            .where(NodeRow.job_id == job_id, tuple_(NodeRow.parent_id, NodeRow.token_id).in_(missing))
        )
        by_key.update({(parent, token): node_id for node_id, parent, token in found})
    return [by_key[(r["parent_id"], r["token_id"])] for r in rows]


def _insert_children_sqlite(
    session: Session, job_id: uuid.UUID, rows: list[dict[str, Any]]
) -> dict[Any, int]:
    values = [{**{name: r[name] for name in _CHILD_COLUMNS}, "job_id": job_id, "is_finished": False}
              for r in rows]
    try:
        with session.begin_nested():
            inserted = insert(NodeRow).returning(NodeRow.id, sort_by_parameter_order=True)
            ids = session.scalars(inserted, values).all()
        return {(r["parent_id"], r["token_id"]): node_id for r, node_id in zip(rows, ids, strict=True)}
    except IntegrityError:
        pass  # some rows exist already: insert the others one by one
    by_key: dict[Any, int] = {}
    for value in values:
        try:
            with session.begin_nested():
                node_id = session.scalar(insert(NodeRow).values(**value).returning(NodeRow.id))
        except IntegrityError:
            continue
        assert node_id is not None
        by_key[(value["parent_id"], value["token_id"])] = node_id
    return by_key


# -- reading what a worker continues from -------------------------------------------------------------


def open_node_ids(session: Session, job_id: JobId, parents: Sequence[int] | None = None) -> list[int]:
    """The job's open nodes (neither expanded nor finished), or those among the children of `parents`, in
    queue order: by depth, then by id."""
    query = select(NodeRow.id).where(NodeRow.job_id == as_job_id(job_id), NodeRow.threshold.is_(None),
                                  NodeRow.is_finished.is_(False))
    if parents is not None:
        if not parents:
            return []
        query = query.where(NodeRow.parent_id.in_(parents))
    return list(session.scalars(query.order_by(NodeRow.depth, NodeRow.id)))


def load_nodes(session: Session, job_id: JobId, node_ids: Sequence[int]) -> dict[int, OpenNode]:
    """The given nodes of the job (ids that are not the job's are left out)."""
    if not node_ids:
        return {}
    rows = session.execute(
        select(NodeRow.id, NodeRow.parent_id, NodeRow.token_id, NodeRow.text, NodeRow.depth, NodeRow.prob,
               NodeRow.logprob, NodeRow.cumulative_prob, NodeRow.is_finished, NodeRow.threshold.is_not(None))
        .where(NodeRow.job_id == as_job_id(job_id), NodeRow.id.in_(node_ids))
    )
    return {row[0]: _open_node(row) for row in rows}


def path_tokens(session: Session, job_id: JobId, node_ids: Sequence[int]) -> dict[int, list[int]]:
    """Each node's token ids from the root's first child down to the node itself, in one recursive query
    (depth x nodes rows; the root, the prompt, has no token)."""
    if not node_ids:
        return {}
    key = as_job_id(job_id)
    chain = (
        select(NodeRow.id.label("start"), NodeRow.parent_id, NodeRow.token_id, NodeRow.depth)
        .where(NodeRow.job_id == key, NodeRow.id.in_(node_ids))
        .cte(recursive=True)
    )
    chain = chain.union_all(
        select(chain.c.start, NodeRow.parent_id, NodeRow.token_id, NodeRow.depth)
        .join(chain, NodeRow.id == chain.c.parent_id)  # by primary key: a parent is always of the same job
    )
    paths: dict[int, list[int]] = {node_id: [] for node_id in node_ids}
    rows = session.execute(
        select(chain.c.start, chain.c.token_id)
        .where(chain.c.token_id.is_not(None))
        .order_by(chain.c.start, chain.c.depth)
    )
    for start, token_id in rows:
        paths[start].append(token_id)
    return paths


def _open_node(row: Any) -> OpenNode:
    return OpenNode(id=row[0], parent_id=row[1], token_id=row[2], text=row[3], depth=row[4], prob=row[5],
                    logprob=row[6], cumulative_prob=row[7], is_finished=row[8], is_expanded=row[9])


def node_totals(session: Session, job_id: JobId) -> tuple[int, int, int]:
    """Counted from the rows: (nodes, expanded nodes, completed paths)."""
    totals = tree_totals(session, job_id)
    return totals.nodes, totals.expanded, totals.completed_paths


@dataclass(frozen=True)
class TreeTotals:
    """A tree's counts and the probability mass it covers (`engine.tree.Coverage`), from its rows."""

    nodes: int
    expanded: int
    completed_paths: int
    coverage: Coverage


def tree_totals(session: Session, job_id: JobId) -> TreeTotals:
    """In one pass over the job's rows (the one that counts them): a leaf is a node not expanded (an
    expansion always writes at least one child), its mass its cumulative probability."""
    expanded, stop = NodeRow.threshold.is_not(None), NodeRow.finish_reason == "stop"
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(case((expanded, 1), else_=0)), 0),
               func.coalesce(func.sum(case((stop, 1), else_=0)), 0),
               func.coalesce(func.sum(case((stop, NodeRow.cumulative_prob), else_=0.0)), 0.0),
               func.coalesce(func.sum(case((expanded, 0.0), else_=NodeRow.cumulative_prob)), 0.0))
        .where(NodeRow.job_id == as_job_id(job_id))
    ).one()
    return TreeTotals(int(row[0]), int(row[1]), int(row[2]),
                      Coverage(completed_mass=float(row[3]), leaf_mass=float(row[4])))
