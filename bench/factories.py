"""Jobs and synthetic token trees written straight into the database, and a dispatcher that only records
what it is sent. The API's tests read them before (and independently of) any worker; the storage
benchmark (bench/storage_speed.py) writes and serves them."""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from tokentree.engine.tree import Candidate, candidates_json
from tokentree.engine.tree import Node as TreeNode
from tokentree.models import jobs
from tokentree.models.schema import Job, NodeRow, utcnow

STOP_TOKEN = 1


def make_job(session: Session, **overrides: Any) -> Job:
    """A committed queued job; any column can be overridden."""
    values: dict[str, Any] = {"kind": "tree", "prompt": "The capital of India is", "model": "demo",
                              "parameters": {"max_nodes": 100}, "chat": False, "prefix": None}
    values.update(overrides)
    return jobs.create_job(session, **values)


def synthetic_tree(size: int, seed: int = 0, prompt: str = "The capital of India is",
                   stop_share: float = 0.1, max_children: int = 3, candidates: int = 10) -> list[TreeNode]:
    """A token tree of `size` nodes shaped like the engine's: level by level, children best first,
    some paths ending at a stop token, every expanded node with its rule inputs and `candidates`
    candidates (its children, then rivals that did not clear the threshold)."""
    rng = random.Random(seed)
    root = TreeNode(id=0, parent_id=None, token_id=None, text=prompt, depth=0, prob=1.0, logprob=0.0,
                    cumulative_prob=1.0)
    nodes = [root]
    queue = [0]
    head = 0
    while head < len(queue) and len(nodes) < size:
        parent = nodes[queue[head]]
        head += 1
        if parent.token_id == STOP_TOKEN:
            parent.is_finished, parent.finish_reason = True, "stop"
            continue
        count = min(rng.randint(1, max_children), size - len(nodes))
        probs = sorted((rng.uniform(0.05, 1.0) for _ in range(count)), reverse=True)
        total = sum(probs) * rng.uniform(1.0, 1.5)
        parent.threshold, parent.queue_depth = rng.uniform(0.1, 0.5), len(queue) - head
        parent.entropy = rng.uniform(0.0, 3.0)
        tokens = rng.sample(range(2, 50_000), count)
        if count > 1 and rng.random() < stop_share:  # a path ends; a sibling carries on
            tokens[-1] = STOP_TOKEN
        for token_id, weight in zip(tokens, probs, strict=True):
            prob = weight / total
            child = TreeNode(id=len(nodes), parent_id=parent.id, token_id=token_id, text=f" t{token_id}",
                             depth=parent.depth + 1, prob=prob, logprob=math.log(prob),
                             cumulative_prob=parent.cumulative_prob * prob)
            parent.candidates.append(Candidate(token_id=token_id, text=child.text, prob=prob))
            parent.children.append(child.id)
            nodes.append(child)
            queue.append(child.id)
        rival_prob = parent.candidates[-1].prob
        for token_id in rng.sample(range(50_000, 60_000), max(0, candidates - count)):
            rival_prob *= rng.uniform(0.5, 0.95)
            parent.candidates.append(Candidate(token_id=token_id, text=f" r{token_id}", prob=rival_prob))
    for node_id in queue[head:]:  # what is left: stop tokens end their path, the rest stay open
        if nodes[node_id].token_id == STOP_TOKEN:
            nodes[node_id].is_finished, nodes[node_id].finish_reason = True, "stop"
    return nodes


def node_rows(
    job_id: uuid.UUID, nodes: list[TreeNode], db_ids: dict[int, int], worker: str
) -> list[dict[str, Any]]:
    """Table rows for `nodes`, whose parents' database ids are in `db_ids` (engine id -> db id)."""
    now = utcnow()
    return [
        {"job_id": job_id, "parent_id": None if n.parent_id is None else db_ids[n.parent_id],
         "token_id": n.token_id, "text": n.text, "depth": n.depth, "prob": n.prob, "logprob": n.logprob,
         "cumulative_prob": n.cumulative_prob, "is_finished": n.is_finished, "finish_reason": n.finish_reason,
         "candidates": candidates_json(n.candidates) if n.candidates else None,
         "threshold": n.threshold, "queue_depth": n.queue_depth, "entropy": n.entropy,
         "expanded_by": worker if n.is_expanded else None, "created_at": now}
        for n in nodes
    ]


def insert_tree(session: Session, job_id: uuid.UUID, nodes: list[TreeNode], worker: str = "worker-1",
                workers: list[str] | None = None) -> list[int]:
    """Write `nodes` (parents before children) level by level; returns each node's database id.

    With `workers`, expanded nodes are attributed to them in turn, level by level. Keeps the job's
    counts current.
    """
    db_ids: dict[int, int] = {}
    levels: dict[int, list[TreeNode]] = {}
    for node in nodes:
        levels.setdefault(node.depth, []).append(node)
    expanded = 0
    for depth in sorted(levels):
        level = levels[depth]
        rows = node_rows(job_id, level, db_ids, worker)
        for row in rows:
            if workers and row["expanded_by"] is not None:
                row["expanded_by"] = workers[expanded % len(workers)]
                expanded += 1
        ids = session.scalars(insert(NodeRow).returning(NodeRow.id, sort_by_parameter_order=True), rows).all()
        db_ids.update((node.id, db_id) for node, db_id in zip(level, ids, strict=True))
    jobs.add_counts(session, job_id, nodes=len(nodes),
                    completed_paths=sum(n.finish_reason == "stop" for n in nodes))
    session.commit()
    return [db_ids[node.id] for node in nodes]


@dataclass
class RecordingDispatcher:
    """A dispatcher that only remembers what it was asked (the embedded mode's stand-in in API tests)."""

    submitted: list[tuple[str, str]] = field(default_factory=list)
    fail_submit: bool = False

    def submit(self, job_id: str, model: str) -> None:
        if self.fail_submit:
            raise ConnectionError("broker down")
        self.submitted.append((job_id, model))

