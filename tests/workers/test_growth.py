"""Growing a finished job in place with a real `tokentree worker`: the new subtree is the engine's rule run
from its start node alone (engine/grow.py, as `tokentree tree --from` runs it), the rest of the tree is
untouched, and the counts and the growth's record say what happened."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.trees import assert_same_tree, by_path
from tests.workers.conftest import MODEL_SOURCE, WorkerProcess, Workers, finished, submit, wait_for
from tests.workers.trees import PROMPT
from tokentree.engine.grow import grow_tree, plan_growth
from tokentree.engine.loading import ModelSpec, load_model
from tokentree.engine.params import TreeParams
from tokentree.tree import Tree

# A small tree cut by max_nodes, so it has unexplored candidates and open leaves to grow from.
FIRST: dict[str, Any] = {"max_nodes": 60, "max_completed_paths": 20}
GROWTH: dict[str, Any] = {"max_nodes": 70, "max_completed_paths": 4}


@pytest.fixture(scope="module")
def grower(workers: Workers) -> Iterator[WorkerProcess]:
    yield workers.start("grower")


def subtree(document: dict[str, Any], node_id: int) -> dict[str, Any]:
    """The subtree at `node_id` as a document of its own (for `assert_same_tree`)."""
    stack = [document["tree"]]
    while stack:
        node = stack.pop()
        if node["id"] == node_id:
            return {"tree": node}
        stack.extend(node["children"])
    raise AssertionError(f"node {node_id} is not in the tree")


def engine_growth(document: dict[str, Any], node_id: int, token_id: int | None,
                  params: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The reference: the same growth in this process (engine/grow.py)."""
    tree = Tree.from_json(document)
    lm = load_model(ModelSpec(name=MODEL_SOURCE, device="cpu"))
    merged = TreeParams.from_dict({**tree.metadata["parameters"], **params})
    plan = plan_growth(tree.nodes, tree.metadata, node_id, token_id, merged)
    record = grow_tree(lm, tree.nodes, tree.metadata, plan)
    return Tree(tree.nodes, tree.metadata).to_dict(), record


def grow(api: httpx.Client, job_id: str, workers: Workers, **body: Any) -> dict[str, Any]:
    response = api.post(f"/v1/jobs/{job_id}/expand", json=body)
    assert response.status_code == 200, response.text
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    return job


def test_a_grown_candidate_is_the_rule_run_from_it_alone(api: httpx.Client, grower: WorkerProcess,
                                                         workers: Workers) -> None:
    job_id = submit(api, PROMPT, **FIRST)
    assert wait_for(api, job_id, finished, workers=workers)["status"] == "succeeded"
    before = api.get(f"/v1/jobs/{job_id}/tree").json()
    parent = next(n for path, n in sorted(by_path(before).items(), key=lambda item: len(item[0]))
                  if len(path) >= 3
                  and {c["token_id"] for c in n["candidates"]} - {c["token_id"] for c in n["children"]})
    children = {c["token_id"] for c in parent["children"]}
    candidate = next(c for c in parent["candidates"] if c["token_id"] not in children)

    job = grow(api, job_id, workers, node_id=parent["id"], token_id=candidate["token_id"], parameters=GROWTH)
    after = api.get(f"/v1/jobs/{job_id}/tree").json()
    [growth] = job["growths"]
    assert after["metadata"]["growths"] == job["growths"]
    new = subtree(after, growth["start_node_id"])
    reference, record = engine_growth(before, parent["id"], candidate["token_id"], GROWTH)
    assert_same_tree(new, subtree(reference, record.start_node_id))
    assert_same_tree(after, reference)  # and the rest of the tree as it was
    # The child's probability is the candidate's at full precision, the probabilities absolute.
    child = new["tree"]
    assert child["logprob"] == candidate["logprob"] and growth["prob_source"] == "logprob"
    assert math.isclose(child["cumulative_prob"], parent["cumulative_prob"] * math.exp(candidate["logprob"]),
                        rel_tol=1e-12)
    # Counts: the growth's own subtree within its limits, the job's counts the whole tree's.
    grown_nodes = len(by_path(new))
    assert 1 < grown_nodes <= GROWTH["max_nodes"]
    assert growth["nodes_before"] == FIRST["max_nodes"]
    assert growth["nodes_after"] == job["progress"]["nodes"] == FIRST["max_nodes"] + grown_nodes
    assert growth["nodes_after"] == record.nodes_after and growth["completed_after"] == record.completed_after
    assert growth["completed_after"] == job["progress"]["completed_paths"]
    assert after["metadata"]["stats"]["nodes"] == growth["nodes_after"]


def test_more_grows_a_leaf_cut_at_the_depth_limit(api: httpx.Client, grower: WorkerProcess,
                                                  workers: Workers) -> None:
    job_id = submit(api, PROMPT, max_depth=4, max_nodes=40)
    assert wait_for(api, job_id, finished, workers=workers)["status"] == "succeeded"
    before = api.get(f"/v1/jobs/{job_id}/tree").json()
    leaf = max((n for n in by_path(before).values() if n["finish_reason"] == "max_depth"),
               key=lambda n: n["cumulative_prob"])
    more = {"max_depth": 3, "max_nodes": 30}
    job = grow(api, job_id, workers, node_id=leaf["id"], parameters=more)
    after = api.get(f"/v1/jobs/{job_id}/tree").json()
    reference, record = engine_growth(before, leaf["id"], None, more)
    assert_same_tree(after, reference)
    grown = subtree(after, leaf["id"])
    depths = [n["depth"] for n in by_path(grown).values()]
    assert max(depths) == leaf["depth"] + 3 and grown["tree"]["threshold"] is not None
    assert job["growths"][0]["nodes_after"] == record.nodes_after == job["progress"]["nodes"]
