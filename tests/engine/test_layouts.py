"""The tree JSON and the log-probability JSONL keep the seed's layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokentree.engine.analysis import analyze_logprobs, build_tree
from tokentree.engine.params import LogprobsParams, TreeParams
from tokentree.engine.tree import Node, tree_json_text

# Copies of the seed notebooks' sample files, kept with the browser tests.
SEED = Path(__file__).resolve().parents[1] / "browser" / "data"
SEED_NODE_KEYS = {
    "text",
    "prob",
    "cumulative_prob",
    "token_id",
    "depth",
    "is_finished",
    "candidates",
    "children",
}
OUR_NODE_KEYS = {"id", "logprob", "entropy", "threshold", "queue_depth", "finish_reason", "child_count",
                 "raw_prob", "raw_logprob", "unexplored_mass"}
OUR_CANDIDATE_KEYS = {"text", "prob", "token_id", "logprob", "raw_prob", "raw_logprob"}


def walk(tree: dict):  # type: ignore[no-untyped-def]
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node["children"])


def test_tree_json_has_the_seed_layout_plus_ours(demo) -> None:  # type: ignore[no-untyped-def]
    result = build_tree(demo, "Once upon a time", TreeParams())
    document = json.loads(result.json_text())
    assert set(document) == {"metadata", "tree"}
    metadata = document["metadata"]
    assert metadata["prompt"] == "Once upon a time"
    assert metadata["parameters"] == TreeParams().to_dict()
    assert {"model", "dtype", "versions", "stats"} <= set(metadata)
    nodes = list(walk(document["tree"]))
    assert len(nodes) == len(result.nodes)
    for node in nodes:
        assert set(node) == SEED_NODE_KEYS | OUR_NODE_KEYS
        for candidate in node["candidates"]:
            assert set(candidate) == OUR_CANDIDATE_KEYS  # "bytes" too where a token is not valid UTF-8
    root = document["tree"]
    assert root["text"] == "Once upon a time" and root["token_id"] is None and root["prob"] == 1.0
    assert sum(1 for n in nodes if n["finish_reason"] == "stop") == 5


def test_seed_sample_uses_the_same_keys() -> None:
    sample = SEED / "india_capital_tree.json"
    tree = json.loads(sample.read_text())["tree"]
    assert set(tree) == SEED_NODE_KEYS


def test_deep_trees_serialise_without_recursion() -> None:
    depth = 20_000
    nodes = [
        Node(
            id=i,
            parent_id=i - 1 if i else None,
            token_id=i or None,
            text=f"t{i}",
            depth=i,
            prob=0.5,
            logprob=-0.69,
            cumulative_prob=0.5,
            children=[i + 1] if i + 1 < depth else [],
        )
        for i in range(depth)
    ]
    text = tree_json_text(nodes, {"prompt": "p"})
    assert text.count('"children": [') == depth
    assert text.endswith("]}" * depth + "}")


def test_subtree_and_depth_limit(demo) -> None:  # type: ignore[no-untyped-def]
    result = build_tree(demo, "Once upon a time", TreeParams())
    fork = next(n for n in result.nodes if len(n.children) > 1)
    sub = json.loads(result.json_text(root_id=fork.id, max_depth=1))["tree"]
    assert sub["id"] == fork.id
    assert [c["id"] for c in sub["children"]] == fork.children
    assert all(c["children"] == [] for c in sub["children"])
    assert all(c["child_count"] == len(result.nodes[c["id"]].children) for c in sub["children"])


def test_logprobs_record_has_the_seed_layout(demo) -> None:  # type: ignore[no-untyped-def]
    record = analyze_logprobs(demo, "Once upon a time", LogprobsParams(max_new_tokens=40, top_k=5))
    assert {"prompt", "response", "data"} <= set(record)
    assert record["prompt"] == "Once upon a time"
    assert 0 < len(record["data"]) <= 40
    for step in record["data"]:
        assert set(step) == {"token", "logprob", "prob", "raw_logprob", "raw_prob", "other_tokens"}
        assert 0 < step["prob"] <= 100
        assert len(step["other_tokens"]) == 5
        assert step["other_tokens"][0]["token"] == step["token"]  # greedy: the chosen one is the best
        assert set(step["other_tokens"][0]) == {"token", "logprob", "prob", "raw_logprob", "raw_prob"}
        assert step["raw_logprob"] == step["logprob"]  # no sampler: the model's own distribution
    # The record reads back as the seed's JSONL does.
    seed_record = json.loads((SEED / "logprobs_sample.jsonl").read_text().splitlines()[0])
    assert set(seed_record) <= set(record)
    assert set(seed_record["data"][0]) | {"raw_logprob", "raw_prob"} == set(record["data"][0])


def test_logprobs_follow_the_tree(demo) -> None:  # type: ignore[no-untyped-def]
    """Greedy generation is the tree's most likely child at every step: one stepping code path."""
    record = analyze_logprobs(demo, "The secret to happiness is", LogprobsParams(max_new_tokens=30))
    result = build_tree(
        demo,
        "The secret to happiness is",
        TreeParams(min_branch_threshold=0.99, max_branch_threshold=0.99, max_completed_paths=1),
    )
    greedy_path = [n for n in result.nodes[1:]]
    assert [n.text for n in greedy_path] == [step["token"] for step in record["data"]]
    assert [n.logprob for n in greedy_path] == pytest.approx([s["logprob"] for s in record["data"]], abs=1e-5)


def test_prefix_forces_the_response_start(demo) -> None:  # type: ignore[no-untyped-def]
    record = analyze_logprobs(
        demo, "Once upon a time", LogprobsParams(max_new_tokens=10), prefix=" in the forest"
    )
    assert record["response"].startswith(" in the forest")
    plain = analyze_logprobs(demo, "Once upon a time", LogprobsParams(max_new_tokens=10))
    assert plain["data"][0]["token"] != record["data"][0]["token"] or plain["data"] != record["data"]


def test_node_json_is_what_json_dumps_writes() -> None:
    import numpy as np

    from tokentree.engine.tree import Candidate, node_json_head

    node = Node(
        id=7,
        parent_id=3,
        token_id=42,
        text='a "quoted"\ttab, ünïcode \u2028 and <img src=x>',
        depth=2,
        prob=0.123456789,
        logprob=np.float64(-2.0920684),
        cumulative_prob=1e-12,
        is_finished=True,
        finish_reason="stop",
        candidates=[Candidate(token_id=5, text="\n\n", prob=0.98765, logprob=-0.012425, raw_prob=0.5,
                              raw_logprob=-0.6931471805599453),
                    Candidate(token_id=6, text="\ufffd", prob=0.01, logprob=-4.6, token_bytes=b"\xe2\x80")],
        threshold=0.1 + 0.4 / 3,
        queue_depth=10,
        entropy=0.0,
        raw_prob=0.0123456789,
        raw_logprob=-4.394,
        token_bytes=b"\x00\xff",
        unexplored_mass=0.25,
    )
    expected = {
        "id": 7,
        "text": node.text,
        "bytes": [0, 255],
        "prob": round(node.prob, 6),
        "logprob": float(node.logprob),
        "cumulative_prob": 1e-12,
        "raw_prob": 0.012346,
        "raw_logprob": -4.394,
        "token_id": 42,
        "depth": 2,
        "is_finished": True,
        "finish_reason": "stop",
        "threshold": node.threshold,
        "queue_depth": 10,
        "entropy": 0.0,
        "unexplored_mass": 0.25,
        "candidates": [{"text": "\n\n", "prob": 0.9877, "token_id": 5, "logprob": -0.012425, "raw_prob": 0.5,
                        "raw_logprob": -0.6931471805599453},
                       {"text": "\ufffd", "prob": 0.01, "token_id": 6, "logprob": -4.6, "raw_prob": 0.01,
                        "raw_logprob": -4.6, "bytes": [226, 128]}],
        "child_count": 0,
        "children": [],
    }
    text = node_json_head(node, 0) + "]}"
    assert json.loads(text) == expected
    assert text == json.dumps(expected)
    for candidate in node.candidates:  # written by hand, or as a dict (`Tree.to_dataframe`): the same
        assert candidate.json_text() == json.dumps(candidate.to_json())
