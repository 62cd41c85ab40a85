"""Property tests: for any valid parameters, the tree follows the rule and respects every cap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine.test_scheduler import STOP, fake_distribution
from tokentree.engine.params import TreeParams
from tokentree.engine.scheduler import TreeBuilder
from tokentree.engine.validate import rule_violations


@st.composite
def tree_params(draw: st.DrawFn) -> TreeParams:
    low = draw(st.floats(0.0, 1.0))
    high = draw(st.floats(low, 1.0))
    return TreeParams(
        min_branch_threshold=low,
        max_branch_threshold=high,
        soft_queue_limit=draw(st.integers(1, 100)),
        candidate_threshold=draw(st.floats(0.0, 1.0)),
        max_depth=draw(st.integers(1, 12)),
        max_completed_paths=draw(st.integers(1, 50)),
        max_nodes=draw(st.integers(1, 400)),
    )


def grow(params: TreeParams, seed: int, max_batch: int) -> TreeBuilder:
    builder = TreeBuilder(params, {STOP}, root_text="p", decode=str)
    paths: dict[int, tuple[int, ...]] = {0: ()}
    while not builder.done():
        wanted = builder.schedule(max_batch)
        for i in builder.update({i: fake_distribution(paths[i], seed) for i in wanted}):
            node = builder.nodes[i]
            paths[i] = (*paths[node.parent_id], node.token_id)  # type: ignore[index]
    return builder


@settings(max_examples=300, deadline=None)
@given(params=tree_params(), seed=st.integers(0, 10**6), max_batch=st.integers(1, 64))
def test_any_valid_parameters_give_a_tree_that_follows_the_rule(
    params: TreeParams, seed: int, max_batch: int
) -> None:
    builder = grow(params, seed, max_batch)
    assert rule_violations(builder.nodes, params, {STOP}) == []
    assert len(builder.nodes) <= params.max_nodes
    assert max(n.depth for n in builder.nodes) <= params.max_depth
    assert builder.completed <= params.max_completed_paths
    # The loop ended for one of the rule's reasons.
    assert (
        not builder.frontier
        or builder.completed == params.max_completed_paths
        or len(builder.nodes) == params.max_nodes
    )


def test_the_validator_catches_a_broken_tree() -> None:
    params = TreeParams(max_completed_paths=50, min_branch_threshold=0.05)
    builder = grow(params, seed=4, max_batch=8)
    assert rule_violations(builder.nodes, params, {STOP}) == []
    fork = next(n for n in builder.nodes if len(n.children) > 1)
    fork.threshold = 0.9  # a threshold the formula never gives for this queue depth
    assert any("threshold" in p for p in rule_violations(builder.nodes, params, {STOP}))
    fork.threshold = None
    assert any("no recorded expansion" in p for p in rule_violations(builder.nodes, params, {STOP}))
