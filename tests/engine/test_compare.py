"""engine/compare.py on hand-made trees: node counts, where the most probable paths part, the distances
worked out by hand, refusals, and a cost that follows the trees' size."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tokentree.engine.compare import NotComparable, compare_trees, recorded_candidates, total_variation
from tokentree.engine.tree import Candidate, Node, candidates_json

# A tree by hand: (token id, text, prob, parent position or None, candidates as (token id, prob) or None
# for a node never expanded). Token texts are the token id's letter.
Spec = tuple[int | None, float, int | None, list[tuple[int, float]] | None]


def make_tree(spec: list[Spec], id_base: int = 0) -> list[Node]:
    nodes: list[Node] = []
    for position, (token, prob, parent, candidates) in enumerate(spec):
        depth = 0 if parent is None else nodes[parent].depth + 1
        parent_id = None if parent is None else nodes[parent].id
        node = Node(id=id_base + position, parent_id=parent_id, token_id=token,
                    text="prompt" if token is None else chr(ord("a") + token), depth=depth, prob=prob,
                    logprob=0.0, cumulative_prob=prob,
                    candidates=[Candidate(t, chr(ord("a") + t), p) for t, p in candidates or []],
                    threshold=None if candidates is None else 0.1)
        if parent is not None:
            nodes[parent].children.append(position)
        nodes.append(node)
    return nodes


META = {"prompt": "prompt", "parameters": {"min_branch_threshold": 0.1}, "chat": False, "prefix": None,
        "model": "demo"}

# A: prompt -> a (0.6) -> c (0.7), d (0.3);  prompt -> b (0.4) -> e (1.0)
TREE_A = make_tree([
    (None, 1.0, None, [(0, 0.6), (1, 0.4)]),
    (0, 0.6, 0, [(2, 0.7), (3, 0.3)]),
    (1, 0.4, 0, [(4, 1.0)]),
    (2, 0.7, 1, None),
    (3, 0.3, 1, None),
    (4, 1.0, 2, None),
])
# B: prompt -> a (0.5) -> d (0.55), c (0.45), f (unexpanded in A's terms: only B);  prompt -> g (0.5)
TREE_B = make_tree([
    (None, 1.0, None, [(0, 0.5), (6, 0.5)]),
    (0, 0.5, 0, [(3, 0.55), (2, 0.40)]),
    (6, 0.5, 0, None),
    (3, 0.55, 1, None),
    (2, 0.40, 1, None),
], id_base=100)


def test_counts_follow_the_token_paths() -> None:
    report = compare_trees(TREE_A, META, TREE_B, META)
    # Shared: the root, "a", "a c", "a d". A alone: "b", "b e". B alone: "g".
    assert (report.shared_nodes, report.only_a, report.only_b) == (4, 2, 1)
    assert (report.a_nodes, report.b_nodes) == (6, 5)


def test_the_most_probable_paths_part_where_their_tokens_differ() -> None:
    parting = compare_trees(TREE_A, META, TREE_B, META).parting
    assert parting is not None
    # Both take "a" first (A 0.6 > 0.4; B 0.5 = 0.5: the first child on ties), then A takes "c", B "d".
    assert (parting.a_node, parting.b_node, parting.depth) == (1, 101, 1)
    assert parting.path.token_ids == [0] and parting.path.text == "a"
    assert parting.a_next is not None and parting.b_next is not None
    assert (parting.a_next.token_id, parting.a_next.prob) == (2, 0.7)
    assert (parting.b_next.token_id, parting.b_next.prob) == (3, 0.55)


def test_identical_trees_have_no_parting_and_no_distance() -> None:
    report = compare_trees(TREE_A, META, TREE_A, META)
    assert report.parting is None
    assert (report.shared_nodes, report.only_a, report.only_b) == (6, 0, 0)
    assert [d.distance for d in report.disagreements] == [0.0, 0.0, 0.0]


def test_a_path_that_ends_in_one_tree_parts_there() -> None:
    short = make_tree([(None, 1.0, None, [(0, 1.0)]), (0, 1.0, 0, None)])
    longer = make_tree([(None, 1.0, None, [(0, 1.0)]), (0, 1.0, 0, [(1, 1.0)]), (1, 1.0, 1, None)])
    parting = compare_trees(short, META, longer, META).parting
    assert parting is not None and parting.path.text == "a"
    assert parting.a_next is None and parting.b_next is not None and parting.b_next.token_id == 1


def test_distances_by_hand() -> None:
    report = compare_trees(TREE_A, META, TREE_B, META)
    by_path = {tuple(report.path(d).token_ids): d.distance for d in report.disagreements}
    # Root: A {a .6, b .4}, B {a .5, g .5}: |.6-.5| + |.4-0| + |0-.5| = 1.0, others both 0 -> 0.5.
    # "a": A {c .7, d .3}, B {d .55, c .40} (other .05): |.7-.4| + |.3-.55| + |0-.05| = 0.6 -> 0.3.
    # "b" is A's alone and "a c", "a d" are expanded in neither: not compared.
    assert by_path == {(): pytest.approx(0.5), (0,): pytest.approx(0.3)}
    assert [d.distance for d in report.disagreements] == sorted(by_path.values(), reverse=True)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ([(1, 0.5), (2, 0.5)], [(1, 0.5), (2, 0.5)], 0.0),
    ([(1, 1.0)], [(2, 1.0)], 1.0),  # nothing in common
    ([(1, 0.9)], [(1, 0.6), (2, 0.2)], 0.3),  # 1/2 (.3 + .2 + |.1 - .2|)
    ([], [(1, 0.5)], 0.5),  # nothing recorded on A: all of A's mass is "other"
    ([(1, 0.5004), (2, 0.5004)], [(1, 0.5), (2, 0.5)], pytest.approx(0.0004)),  # rounding: other never < 0
])
def test_total_variation(a: list[tuple[int, float]], b: list[tuple[int, float]], expected: Any) -> None:
    cands_a = [Candidate(t, "", p) for t, p in a]
    cands_b = [Candidate(t, "", p) for t, p in b]
    assert total_variation(cands_a, cands_b) == pytest.approx(expected)
    assert total_variation(cands_b, cands_a) == pytest.approx(expected)  # symmetric
    assert 0.0 <= total_variation(cands_a, cands_b) <= 1.0


def test_stored_candidates_are_read_from_their_json_text() -> None:
    node = make_tree([(None, 1.0, None, [(0, 0.25), (1, 0.75)])])[0]
    stored = Node(id=7, parent_id=None, token_id=None, text="p", depth=0, prob=1.0, logprob=0.0,
                  cumulative_prob=1.0, candidates_json=candidates_json(node.candidates), threshold=0.1)
    read = [(c.token_id, c.text, c.prob) for c in recorded_candidates(stored)]
    assert read == [(0, "a", 0.25), (1, "b", 0.75)]


def test_different_prompts_are_refused_in_one_line() -> None:
    with pytest.raises(NotComparable) as refused:
        compare_trees(TREE_A, META, TREE_B, {**META, "prompt": "another prompt"})
    assert "different prompts" in str(refused.value) and "\n" not in str(refused.value)


def test_settings_that_differ_are_reported_and_chat_or_prefix_noted() -> None:
    other = {**META, "chat": True, "parameters": {"min_branch_threshold": 0.3}}
    report = compare_trees(TREE_A, META, TREE_B, other)
    assert report.differences == {"chat": [False, True], "parameters.min_branch_threshold": [0.1, 0.3]}
    assert len(report.notes) == 1 and "chat template" in report.notes[0]


def test_the_report_is_json_with_the_documented_keys() -> None:
    report = json.loads(json.dumps(compare_trees(TREE_A, META, TREE_B, META).to_json(top=1)))
    assert set(report) == {"prompt", "measure", "a", "b", "shared_nodes", "only_a", "only_b", "differences",
                           "notes", "parting", "shared_expanded", "disagreements"}
    assert report["measure"] == "total_variation" and report["shared_expanded"] == 2
    [top] = report["disagreements"]
    assert (top["a_node"], top["b_node"], top["tokens"], top["text"]) == (0, 100, [], "")
    assert top["a"] == [{"token_id": 0, "text": "a", "prob": 0.6}, {"token_id": 1, "text": "b", "prob": 0.4}]
    assert report["parting"]["a"] == {"node": 3, "token_id": 2, "text": "c", "prob": 0.7}


def chain(length: int) -> list[Node]:
    """A single path `length` tokens long, every node expanded."""
    return make_tree([(None, 1.0, None, [(0, 1.0)])]
                     + [(0, 1.0, position, [(0, 1.0)]) for position in range(length)])


def test_the_cost_follows_the_trees_size_not_their_depth_squared() -> None:
    """A path 40,000 tokens long: copying each node's path along the walk would cost 800 million steps."""
    deep = chain(40_000)
    started = time.perf_counter()
    report = compare_trees(deep, META, deep, META)
    assert report.shared_nodes == 40_001 and len(report.disagreements) == 40_001
    assert time.perf_counter() - started < 5
