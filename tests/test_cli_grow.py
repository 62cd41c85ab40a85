"""`tokentree tree --from tree.json --node ID [--token ID]`: a tree file grown in place with the demo model.
The output is the whole tree with the new branch, the old nodes as they were, the new subtree the rule run
from its start node alone (its first pop sees a queue of one), and the growth in the metadata; mistakes
are one line and exit status 2."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.trees import by_path
from tests.test_cli import tokentree
from tokentree.engine import DEMO_MODEL_DIR
from tokentree.engine.params import TreeParams, branch_threshold

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grow") / "tree.json"
    done = tokentree("tree", PROMPT, "--max-nodes", "60", "-q", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def unexplored_candidate(tree: dict[str, Any], min_depth: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """A node at `min_depth` or deeper with a recorded candidate that is not its child, and that candidate."""
    for path, node in sorted(by_path(tree).items(), key=lambda item: (len(item[0]), item[0])):
        children = {c["token_id"] for c in node["children"]}
        rivals = [c for c in node["candidates"] if c["token_id"] not in children]
        if len(path) >= min_depth and rivals:
            return node, rivals[0]
    raise AssertionError("no unexplored candidate")


def assert_rule_from_alone(subtree: dict[str, Any], params: TreeParams) -> None:
    """Every expanded node of the growth: its threshold the formula's for its |Q|, its children the
    candidates above it (or the best one), by their full-precision probabilities; the start node popped
    from a queue of one (nothing else of the tree counts)."""
    assert subtree["queue_depth"] == 1
    stack = [subtree]
    while stack:
        node = stack.pop()
        stack.extend(node["children"])
        if node["threshold"] is None:
            continue
        assert math.isclose(node["threshold"], branch_threshold(node["queue_depth"], params), abs_tol=1e-12)
        above = [c["token_id"] for c in node["candidates"] if math.exp(c["logprob"]) > node["threshold"]]
        kids = [c["token_id"] for c in node["children"]]
        assert kids == (above or [node["candidates"][0]["token_id"]])[: len(kids)] and kids, node["id"]


def test_a_candidate_grows_into_a_branch_of_the_whole_tree(small_tree: Path, tmp_path: Path) -> None:
    before = json.loads(small_tree.read_text())
    parent, candidate = unexplored_candidate(before)
    out = tmp_path / "grown.json"
    done = tokentree("tree", "--from", str(small_tree), "--node", str(parent["id"]), "--token",
                     str(candidate["token_id"]), "--max-nodes", "50", "--max-completed-paths", "3", "-q",
                     "-o", str(out))
    assert done.returncode == 0, done.stderr
    after = json.loads(out.read_text())
    [growth] = after["metadata"]["growths"]
    assert (growth["node_id"], growth["token_id"], growth["prob_source"]) == (
        parent["id"], candidate["token_id"], "logprob")
    assert growth["parameters"] == {**before["metadata"]["parameters"], "max_nodes": 50,
                                    "max_completed_paths": 3}
    old, new = by_path(before), by_path(after)
    # The old nodes stay as they were (the grown node gains a child, so less of its mass is unexplored).
    assert set(old) <= set(new)
    for path, node in old.items():
        same = {k: v for k, v in node.items() if k not in ("children", "child_count", "unexplored_mass")}
        assert same == {k: v for k, v in new[path].items() if k in same}, path
    grown = {path: node for path, node in new.items() if path not in old}
    start = next(n for n in grown.values() if n["id"] == growth["start_node_id"])
    assert start["logprob"] == candidate["logprob"]
    assert math.isclose(start["cumulative_prob"], parent["cumulative_prob"] * math.exp(candidate["logprob"]),
                        rel_tol=1e-12)
    assert 1 < len(grown) <= 50 and growth["nodes_after"] == len(new) == growth["nodes_before"] + len(grown)
    completed = sum(1 for n in grown.values() if n["finish_reason"] == "stop")
    assert 1 <= completed <= 3 and growth["completed_after"] == growth["completed_before"] + completed
    assert_rule_from_alone(start, TreeParams.from_dict(growth["parameters"]))
    # The summary names the growth and prints its completed paths, the prompt first.
    where = next(path for path, node in old.items() if node["id"] == parent["id"])
    lead = PROMPT + "".join(old[where[:i]]["text"] for i in range(1, len(where) + 1)) + candidate["text"]
    assert f"grew node {parent['id']}" in done.stdout and f"  {lead}" in done.stdout, done.stdout

    # A grown file grows again: its growths accumulate.
    parent2, candidate2 = unexplored_candidate(after)
    again = tokentree("tree", "--from", str(out), "--node", str(parent2["id"]), "--token",
                      str(candidate2["token_id"]), "--max-nodes", "5", "-q", "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert len(json.loads(out.read_text())["metadata"]["growths"]) == 2


def test_more_grows_a_leaf_cut_at_the_depth_limit(tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    assert tokentree("tree", PROMPT, "--max-depth", "3", "-q", "-o", str(cut)).returncode == 0
    before = json.loads(cut.read_text())
    leaf = max((n for n in by_path(before).values() if n["finish_reason"] == "max_depth"),
               key=lambda n: n["cumulative_prob"])
    done = tokentree("tree", "--from", str(cut), "--node", str(leaf["id"]), "--max-depth", "4", "-q",
                     "-o", str(cut))
    assert done.returncode == 0, done.stderr
    after = json.loads(cut.read_text())
    grown = next(n for n in by_path(after).values() if n["id"] == leaf["id"])
    assert grown["threshold"] is not None and grown["finish_reason"] is None
    depths = [n["depth"] for n in by_path({"tree": grown}).values()]
    assert max(depths) == leaf["depth"] + 4  # max_depth counts from the grown node
    assert_rule_from_alone(grown, TreeParams.from_dict(after["metadata"]["growths"][0]["parameters"]))


@pytest.mark.parametrize(("extra", "message"), [
    (["--node", "99999", "--token", "5"], "--node: 99999 is not a node of this tree"),
    (["--node", "0", "--token", "5"], "--token: 5 is not among the node's recorded candidates"),
    (["--node", "0"], "--node: the node is expanded already"),
    ([], "--from needs --node"),
    (["--node", "0", "--token", "5", "--max-nodes", "0"], "max_nodes: must be between"),
    (["--node", "0", "--token", "5", "--model", str(DEMO_MODEL_DIR)],
     "--model: the tree was built by 'demo'"),
])
def test_bad_growths_are_one_line_and_exit_2(small_tree: Path, extra: list[str], message: str) -> None:
    if "--model" in extra:  # the model is checked once the growth itself is good
        tree = json.loads(small_tree.read_text())
        parent, candidate = unexplored_candidate(tree)
        extra = ["--node", str(parent["id"]), "--token", str(candidate["token_id"]), *extra[4:]]
    done = tokentree("tree", "--from", str(small_tree), *extra, "-q")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_a_stop_leaf_has_nothing_more(small_tree: Path, tmp_path: Path) -> None:
    stopped = tmp_path / "stopped.json"
    assert tokentree("tree", PROMPT, "--max-nodes", "400", "-q", "-o", str(stopped)).returncode == 0
    stop_leaf = next(n for n in by_path(json.loads(stopped.read_text())).values()
                     if n["finish_reason"] == "stop")
    done = tokentree("tree", "--from", str(stopped), "--node", str(stop_leaf["id"]), "-q")
    assert done.returncode == 2 and "--node: the node ends its path at a stop token" in done.stderr
    both = tokentree("tree", PROMPT, "--from", str(small_tree), "--node", "1", "-q")
    assert both.returncode == 2 and "give no prompt" in both.stderr
