"""The read side of a job's nodes: its tree in the CLI's JSON layout, its completed paths, its progress.

Reads are plain column selects (no ORM objects: a 100,000-node tree is read often while it grows) and
never need the job to be finished: a running job's nodes are a consistent partial tree, because a
node is written after its parent. The JSON itself is written by `engine.tree.tree_json_text`, so the
API serves exactly the layout the CLI writes; node ids in it are database ids.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, case, func, select, true
from sqlalchemy.orm import Session

from tokentree.engine.tree import CompletedPath, FinishReason, coverage, response_text, tree_json_text
from tokentree.engine.tree import Node as TreeNode
from tokentree.models.jobs import JobId, as_job_id
from tokentree.models.schema import Job, NodeRow

# What the JSON shows of a node, in one select. Candidates are stored as the JSON text the tree shows
# and passed through as they are.
TREE_COLUMNS = (
    NodeRow.id, NodeRow.parent_id, NodeRow.token_id, NodeRow.text, NodeRow.depth, NodeRow.prob,
    NodeRow.logprob, NodeRow.cumulative_prob, NodeRow.is_finished, NodeRow.finish_reason, NodeRow.candidates,
    NodeRow.threshold, NodeRow.queue_depth, NodeRow.entropy, NodeRow.raw_prob, NodeRow.raw_logprob,
    NodeRow.token_bytes, NodeRow.unexplored_mass,
)


class NodeNotFound(LookupError):
    """The node asked for is not one of the job's nodes."""


@dataclass(frozen=True)
class JobProgress:
    """How far a job has got: nodes written, open nodes not yet expanded, paths completed, and how many
    nodes each worker expanded."""

    nodes: int
    frontier: int | None
    completed_paths: int
    workers: dict[str, int] | None

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "frontier": self.frontier, "completed_paths": self.completed_paths,
                "workers": self.workers}


# -- tree -------------------------------------------------------------------------------------------


def root_node_id(session: Session, job_id: JobId) -> int | None:
    """The database id of the job's root node (the prompt), or None before the first write."""
    return session.scalar(
        select(NodeRow.id).where(NodeRow.job_id == as_job_id(job_id), NodeRow.parent_id.is_(None)))


def _subtree_query(job_id: uuid.UUID, root_id: int, deepest: int | None) -> Select:
    """The rows of the subtree at `root_id`, down to depth `deepest` at most, parents first."""
    below = select(NodeRow.id).where(NodeRow.job_id == job_id, NodeRow.id == root_id).cte(recursive=True)
    child = select(NodeRow.id).join(below, and_(NodeRow.job_id == job_id, NodeRow.parent_id == below.c.id))
    if deepest is not None:
        child = child.where(NodeRow.depth <= deepest)
    below = below.union_all(child)
    return select(*TREE_COLUMNS).join(below, NodeRow.id == below.c.id).order_by(NodeRow.id)


def load_tree_nodes(
    session: Session, job_id: JobId, root_id: int | None = None, max_depth: int | None = None
) -> list[TreeNode]:
    """The job's nodes as engine nodes, the (sub)tree's root first, each node's children by id.

    List positions are the nodes' indices (what `children` holds); `id` is the database id. With
    `max_depth`, nodes more than `max_depth` levels below the root are left out, except that one
    level more is read so the deepest nodes shown still report their `child_count`. Raises
    `NodeNotFound` if `root_id` is not a node of this job. Empty before the job's first write.
    """
    key = as_job_id(job_id)
    whole_tree = root_id is None
    if root_id is None:
        root_id = root_node_id(session, key)
        if root_id is None:
            return []
        root_depth = 0
    else:
        found = session.scalar(select(NodeRow.depth).where(NodeRow.job_id == key, NodeRow.id == root_id))
        if found is None:
            raise NodeNotFound(f"node {root_id} is not in job {key}")
        root_depth = found
    deepest = None if max_depth is None else root_depth + max_depth + 1
    if whole_tree:
        query = select(*TREE_COLUMNS).where(NodeRow.job_id == key).order_by(NodeRow.id)
        if deepest is not None:
            query = query.where(NodeRow.depth <= deepest)
    else:
        query = _subtree_query(key, root_id, deepest)

    nodes: list[TreeNode] = []
    index: dict[int, int] = {}
    for row in session.execute(query):
        (node_id, parent_id, token_id, text, depth, prob, logprob, cumulative_prob, is_finished,
         finish_reason, candidates, threshold, queue_depth, entropy, raw_prob, raw_logprob, token_bytes,
         unexplored) = row
        parent = None
        if node_id != root_id:
            parent = index.get(parent_id) if parent_id is not None else None
            if parent is None:
                continue  # a parent outside what was read: nothing to hang the node on
        index[node_id] = len(nodes)
        node = TreeNode(
            id=node_id, parent_id=parent_id, token_id=token_id, text=text, depth=depth, prob=prob,
            logprob=logprob, cumulative_prob=cumulative_prob, is_finished=is_finished,
            finish_reason=typing.cast("FinishReason | None", finish_reason), threshold=threshold,
            queue_depth=queue_depth, entropy=entropy, candidates_json=candidates or "[]", raw_prob=raw_prob,
            raw_logprob=raw_logprob, token_bytes=None if token_bytes is None else bytes(token_bytes),
            unexplored_mass=unexplored,
        )
        if parent is not None:
            nodes[parent].children.append(len(nodes))
        nodes.append(node)
    return nodes


def tree_metadata(job: Job) -> dict[str, Any]:
    """The tree JSON's metadata: the request as the CLI records it, plus what the workers reported
    in the job's result (model source, dtype, versions, prompt token ids, stats), plus the job."""
    metadata: dict[str, Any] = {"prompt": job.prompt, "parameters": job.parameters, "chat": job.chat,
                                "prefix": job.prefix, "model": job.model}
    metadata.update((key, value) for key, value in (job.result or {}).items() if key != "record")
    if job.growths:  # its growths in place (models/growths.py), as `tokentree tree --from` records them
        metadata["growths"] = job.growths
    metadata["job"] = {"id": str(job.id), "status": job.status}
    return metadata


def tree_json(
    session: Session, job: Job, root_id: int | None = None, max_depth: int | None = None
) -> str | None:
    """The job's tree (or the subtree at `root_id`, `max_depth` levels deep) in the CLI's JSON layout;
    None while the job has no nodes. Raises `NodeNotFound` for a root that is not in the job."""
    nodes = load_tree_nodes(session, job.id, root_id, max_depth)
    if not nodes:
        return None
    metadata = tree_metadata(job)
    if "coverage" not in metadata and root_id is None and max_depth is None:
        # A tree not finished (running, or cancelled): its mass so far, from the nodes read anyway. A
        # finished one's was counted once, by the worker that finished it.
        metadata["coverage"] = coverage(nodes).to_json()
    return tree_json_text(nodes, metadata, root_id=0, max_depth=max_depth)


# -- paths ------------------------------------------------------------------------------------------


def completed_paths(session: Session, job_id: JobId, limit: int,
                    prefix: str | None = None) -> list[CompletedPath]:
    """The `limit` most probable paths that reached a stop token (ties: the earlier node first); their
    text begins with the job's forced `prefix` (`engine.tree.response_text`)."""
    key = as_job_id(job_id)
    leaves = session.execute(
        select(NodeRow.id, NodeRow.cumulative_prob)
        .where(NodeRow.job_id == key, NodeRow.finish_reason == "stop")
        .order_by(NodeRow.cumulative_prob.desc(), NodeRow.id)
        .limit(limit)
    ).all()
    if not leaves:
        return []
    steps = path_steps(session, [leaf_id for leaf_id, _ in leaves], key)
    return [
        CompletedPath(node_id=leaf_id, cumulative_prob=cumulative_prob,
                      text=response_text(prefix, (text for _, text in steps[leaf_id])),
                      token_ids=[token for token, _ in steps[leaf_id] if token is not None])
        for leaf_id, cumulative_prob in leaves
    ]


def path_steps(
    session: Session, node_ids: Iterable[int], job_id: JobId | None = None
) -> dict[int, list[tuple[int | None, str]]]:
    """Each node's path from the root, as (token id, text) steps below the root (the prompt) down to the
    node itself, in one recursive query: depth x nodes rows, never the whole tree. `job_id` keeps the
    walk on that job's rows (one tree); without it the nodes may be of many jobs (a study's)."""
    wanted = list(node_ids)
    if not wanted:
        return {}
    same_job = true() if job_id is None else NodeRow.job_id == as_job_id(job_id)
    chain = (
        select(NodeRow.id.label("leaf"), NodeRow.id, NodeRow.parent_id, NodeRow.token_id, NodeRow.text,
               NodeRow.depth)
        .where(same_job, NodeRow.id.in_(wanted))
        .cte(recursive=True)
    )
    chain = chain.union_all(
        select(chain.c.leaf, NodeRow.id, NodeRow.parent_id, NodeRow.token_id, NodeRow.text, NodeRow.depth)
        .join(chain, and_(same_job, NodeRow.id == chain.c.parent_id))
    )
    steps: dict[int, list[tuple[int | None, str]]] = {node_id: [] for node_id in wanted}
    rows = session.execute(
        select(chain.c.leaf, chain.c.token_id, chain.c.text)
        .where(chain.c.parent_id.is_not(None))  # the root is the prompt, not part of the path
        .order_by(chain.c.leaf, chain.c.depth)
    )
    for node_id, token_id, text in rows:
        steps[node_id].append((token_id, text))
    return steps


# -- progress ---------------------------------------------------------------------------------------


def job_progress(session: Session, job_id: JobId) -> JobProgress:
    """Counted from the nodes themselves in one pass over the job's rows (so it is right even while
    workers are between updates of the job's counters)."""
    key = as_job_id(job_id)
    return jobs_progress(session, [key])[key]


def jobs_progress(session: Session, job_ids: Iterable[JobId]) -> dict[uuid.UUID, JobProgress]:
    """`job_progress` of several jobs in one query (event streams read every watched job at once); a job
    without nodes is all zeros."""
    keys = {as_job_id(job_id) for job_id in job_ids}
    if not keys:
        return {}
    counts: dict[uuid.UUID, tuple[int, int, int, dict[str, int]]] = {key: (0, 0, 0, {}) for key in keys}
    is_open = and_(NodeRow.is_finished.is_(False), NodeRow.threshold.is_(None))
    rows = session.execute(
        select(
            NodeRow.job_id,
            NodeRow.expanded_by,
            func.count(),
            func.sum(case((is_open, 1), else_=0)),
            func.sum(case((NodeRow.finish_reason == "stop", 1), else_=0)),
        )
        .where(NodeRow.job_id.in_(keys))
        .group_by(NodeRow.job_id, NodeRow.expanded_by)
    )
    for job_id, worker, count, open_count, stopped in rows:
        nodes, frontier, completed, workers = counts[job_id]
        if worker is not None:
            workers[worker] = count
        counts[job_id] = (nodes + count, frontier + (open_count or 0), completed + (stopped or 0), workers)
    return {key: JobProgress(nodes=nodes, frontier=frontier, completed_paths=completed,
                          workers=dict(sorted(workers.items())))
            for key, (nodes, frontier, completed, workers) in counts.items()}


def counted_progress(job: Job) -> JobProgress:
    """Progress from the counters kept with the job, without reading nodes (for job lists): the
    frontier and the per-worker counts need the nodes, so they are None (unknown here)."""
    return JobProgress(nodes=job.node_count, frontier=None, completed_paths=job.completed_paths, workers=None)

