"""The read side on both backends: the served tree is the engine's JSON (ids are database ids), and
paths and progress agree with the engine's own accounting of the same tree."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.orm import Session

from bench.factories import insert_tree, make_job, synthetic_tree
from tokentree.engine.tree import Node as TreeNode
from tokentree.engine.tree import completed_paths, coverage, tree_json_text
from tokentree.models import jobs, node_reads
from tokentree.models.schema import Job


def engine_json_with_db_ids(nodes: list[TreeNode], db_ids: list[int], job: Job, root: int = 0,
                            max_depth: int | None = None) -> dict[str, Any]:
    """What the engine writes for the same tree, with its ids replaced by the database's. A whole tree
    whose job recorded no coverage (not finished) has the coverage of its nodes so far."""
    metadata = node_reads.tree_metadata(job)
    if "coverage" not in metadata and root == 0 and max_depth is None:
        metadata["coverage"] = coverage(nodes).to_json()
    document = json.loads(tree_json_text(nodes, metadata, root, max_depth))
    stack = [document["tree"]]
    while stack:
        node = stack.pop()
        node["id"] = db_ids[node["id"]]
        stack.extend(node["children"])
    return document


Stored = tuple[Job, list[TreeNode], list[int]]  # a job, its tree, and the nodes' database ids


@pytest.fixture
def stored(db_session: Session) -> Stored:
    job = make_job(db_session)
    nodes = synthetic_tree(600, seed=7)
    db_ids = insert_tree(db_session, job.id, nodes, workers=["worker-a", "worker-b"])
    return job, nodes, db_ids


def test_the_tree_is_the_engines_json(db_session: Session, stored: Stored) -> None:
    job, nodes, db_ids = stored
    served = node_reads.tree_json(db_session, job)
    assert served is not None
    assert json.loads(served) == engine_json_with_db_ids(nodes, db_ids, job)


@pytest.mark.parametrize("max_depth", [0, 1, 3])
def test_depth_limit_keeps_child_counts(db_session: Session, stored: Stored,
                                        max_depth: int) -> None:
    job, nodes, db_ids = stored
    served = json.loads(node_reads.tree_json(db_session, job, max_depth=max_depth) or "")
    assert served == engine_json_with_db_ids(nodes, db_ids, job, max_depth=max_depth)
    assert served["tree"]["child_count"] > 0


@pytest.mark.parametrize("max_depth", [None, 2])
def test_a_subtree_from_a_node(db_session: Session, stored: Stored,
                               max_depth: int | None) -> None:
    job, nodes, db_ids = stored
    inner = next(n for n in nodes if n.depth == 2 and len(n.children) > 1)
    served = json.loads(
        node_reads.tree_json(db_session, job, root_id=db_ids[inner.id], max_depth=max_depth) or "")
    assert served == engine_json_with_db_ids(nodes, db_ids, job, root=inner.id, max_depth=max_depth)
    assert served["tree"]["id"] == db_ids[inner.id]


def test_a_node_of_another_job_is_not_a_root(db_session: Session,
                                             stored: Stored) -> None:
    _, _, db_ids = stored
    other = make_job(db_session)
    with pytest.raises(node_reads.NodeNotFound):
        node_reads.tree_json(db_session, other, root_id=db_ids[5])


def test_no_tree_before_the_first_write(db_session: Session) -> None:
    job = make_job(db_session)
    assert node_reads.tree_json(db_session, job) is None
    assert node_reads.completed_paths(db_session, job.id, 10) == []
    assert node_reads.job_progress(db_session, job.id) == node_reads.JobProgress(0, 0, 0, {})


def test_a_partial_tree_is_a_tree(db_session: Session) -> None:
    """While a job runs only the first levels exist: what is there is served, open nodes included."""
    job = make_job(db_session)
    nodes = synthetic_tree(300, seed=3)
    shallow = [n for n in nodes if n.depth <= 3]
    for node in shallow:
        node.children = [c for c in node.children if nodes[c].depth <= 3]
    db_ids = insert_tree(db_session, job.id, shallow)
    served = json.loads(node_reads.tree_json(db_session, job) or "")
    assert served == engine_json_with_db_ids(shallow, db_ids, job)


def test_metadata_carries_the_request_and_the_workers_report(db_session: Session) -> None:
    job = make_job(db_session, parameters={"max_nodes": 7}, chat=True, prefix="A")
    jobs.finish_job(db_session, job.id, "succeeded", result={"source": "/models/demo", "stats": {"nodes": 1}})
    job = jobs.get_job(db_session, job.id)  # type: ignore[assignment]
    assert node_reads.tree_metadata(job) == {
        "prompt": job.prompt, "parameters": {"max_nodes": 7}, "chat": True, "prefix": "A", "model": "demo",
        "source": "/models/demo", "stats": {"nodes": 1}, "job": {"id": str(job.id), "status": "succeeded"},
    }


def test_paths_rank_like_the_engine(db_session: Session, stored: Stored) -> None:
    job, nodes, db_ids = stored
    expected = completed_paths(nodes)
    assert len(expected) > 5
    got = node_reads.completed_paths(db_session, job.id, limit=1000)
    assert [p.node_id for p in got] == [db_ids[p.node_id] for p in expected]
    assert [(p.text, p.token_ids, p.cumulative_prob) for p in got] == [
        (p.text, p.token_ids, p.cumulative_prob) for p in expected]
    top = node_reads.completed_paths(db_session, job.id, limit=3)
    assert [p.node_id for p in top] == [p.node_id for p in got[:3]]


def test_progress_counts_the_nodes(db_session: Session, stored: Stored) -> None:
    job, nodes, _ = stored
    progress = node_reads.job_progress(db_session, job.id)
    expanded = [n for n in nodes if n.is_expanded]
    assert progress.nodes == len(nodes)
    assert progress.frontier == sum(not n.is_finished and not n.is_expanded for n in nodes) > 0
    assert progress.completed_paths == len(completed_paths(nodes))
    assert progress.workers == {"worker-a": (len(expanded) + 1) // 2, "worker-b": len(expanded) // 2}
    counted = node_reads.counted_progress(jobs.get_job(db_session, job.id))  # type: ignore[arg-type]
    assert (counted.nodes, counted.completed_paths) == (progress.nodes, progress.completed_paths)
