"""The branching rule on hand-made distributions: the batched builder against a plain loop."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque

import pytest

from tokentree.engine.params import TreeParams, branch_threshold
from tokentree.engine.scheduler import Distribution, TreeBuilder
from tokentree.engine.tree import Node

STOP = 0
VOCAB = 8


def fake_distribution(prefix: tuple[int, ...], seed: int) -> Distribution:
    """A fixed, sharp-ish distribution per prefix, so trees branch and stop."""
    rng = random.Random(hash((prefix, seed)))
    weights = [rng.random() ** 3 for _ in range(VOCAB)]
    weights[STOP] += 0.02 * len(prefix)  # paths grow likelier to stop as they lengthen
    total = sum(weights)
    probs = [w / total for w in weights]
    return Distribution(
        token_ids=list(range(VOCAB)),
        probs=probs,
        logprobs=[math.log(p) for p in probs],
        entropy=-sum(p * math.log(p) for p in probs),
    )


def plain_rule(params: TreeParams, seed: int) -> list[tuple]:
    """The rule exactly as written, one pop at a time.

    Returns nodes as (path, children count, threshold, finish reason).
    """
    queue = deque([()])
    out: dict[tuple, list] = {(): [0, None, None]}
    order = [()]
    completed = 0
    while queue and completed < params.max_completed_paths and len(order) < params.max_nodes:
        threshold = branch_threshold(len(queue), params)
        path = queue.popleft()
        if len(path) >= params.max_depth:
            out[path][2] = "max_depth"
            continue
        if path and path[-1] == STOP:
            out[path][2] = "stop"
            completed += 1
            continue
        dist = fake_distribution(path, seed)
        ranked = sorted(zip(dist.token_ids, dist.probs, strict=True), key=lambda t: (-t[1], t[0]))
        chosen = [t for t, p in ranked if p > threshold] or [ranked[0][0]]
        chosen = chosen[: params.max_nodes - len(order)]
        out[path][0] = len(chosen)
        out[path][1] = threshold
        for token in chosen:
            child = (*path, token)
            out[child] = [0, None, None]
            order.append(child)
            queue.append(child)
    return [(p, *out[p]) for p in order]


def batched(params: TreeParams, seed: int, max_batch: int) -> tuple[list[tuple], list[int]]:
    builder = TreeBuilder(params, {STOP}, root_text="prompt", decode=str)
    paths = {0: ()}
    evaluated: list[int] = []
    while not builder.done():
        wanted = builder.schedule(max_batch)
        assert len({builder.nodes[i].depth for i in wanted}) <= 1, "a batch mixes depths"
        evaluated += wanted
        created = builder.update({i: fake_distribution(paths[i], seed) for i in wanted})
        for i in created:
            node = builder.nodes[i]
            paths[i] = (*paths[node.parent_id], node.token_id)
    nodes = [(paths[n.id], len(n.children), n.threshold, n.finish_reason) for n in builder.nodes]
    return nodes, evaluated


PARAMS = [
    TreeParams(),
    TreeParams(
        min_branch_threshold=0.05,
        max_branch_threshold=0.3,
        soft_queue_limit=50,
        max_completed_paths=40,
        max_depth=12,
    ),
    TreeParams(
        min_branch_threshold=0.0,
        max_branch_threshold=0.2,
        soft_queue_limit=5,
        max_completed_paths=1000,
        max_depth=6,
        max_nodes=700,
    ),
    TreeParams(min_branch_threshold=0.2, max_branch_threshold=0.2, max_completed_paths=3, max_depth=30),
    TreeParams(max_depth=1),
    TreeParams(max_nodes=1),
    TreeParams(max_nodes=2),
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("max_batch", [1, 3, 256])
def test_batched_builder_equals_the_plain_rule(params: TreeParams, seed: int, max_batch: int) -> None:
    nodes, _ = batched(params, seed, max_batch)
    assert nodes == plain_rule(params, seed)


@pytest.mark.parametrize("params", PARAMS)
def test_only_expanded_nodes_are_evaluated(params: TreeParams) -> None:
    builder_nodes, evaluated = batched(params, seed=7, max_batch=4)
    expanded = [i for i, node in enumerate(builder_nodes) if node[2] is not None]
    if len(builder_nodes) < params.max_nodes:
        assert evaluated == expanded
    else:
        # At the max_nodes cap the last batch may hold nodes the cap then leaves unexpanded.
        assert evaluated[: len(expanded)] == expanded
        assert len(evaluated) - len(expanded) < 4


def test_caps_hold() -> None:
    params = TreeParams(
        min_branch_threshold=0.0, max_branch_threshold=0.0, max_nodes=50, max_completed_paths=10**6
    )
    nodes, _ = batched(params, seed=5, max_batch=8)
    assert len(nodes) == 50
    params = TreeParams(max_depth=4, max_completed_paths=10**6, min_branch_threshold=0.05)
    nodes, _ = batched(params, seed=5, max_batch=8)
    assert max(len(path) for path, *_ in nodes) == 4


def test_stop_and_depth_reasons() -> None:
    nodes, _ = batched(TreeParams(max_completed_paths=4, max_depth=5), seed=11, max_batch=16)
    reasons = {reason for *_, reason in nodes}
    assert reasons <= {None, "stop", "max_depth"}
    assert 1 <= sum(1 for *_, r in nodes if r == "stop") <= 4
    for path, _, _, reason in nodes:
        if reason == "stop":
            assert path[-1] == STOP
        if reason == "max_depth":
            assert len(path) == 5


def test_continuing_from_a_frontier_gives_the_same_tree() -> None:
    """What a worker does: take over open nodes mid-tree and finish the job."""
    params = TreeParams(
        min_branch_threshold=0.05,
        max_branch_threshold=0.3,
        soft_queue_limit=40,
        max_completed_paths=30,
        max_depth=10,
    )
    whole, _ = batched(params, seed=3, max_batch=5)

    first = TreeBuilder(params, {STOP}, root_text="prompt", decode=str)
    paths = {0: ()}
    for _ in range(6):
        wanted = first.schedule(5)
        for i in first.update({i: fake_distribution(paths[i], 3) for i in wanted}):
            paths[i] = (*paths[first.nodes[i].parent_id], first.nodes[i].token_id)
    open_ids = list(first.frontier)
    handed = [
        dataclasses.replace(first.nodes[i], id=k, parent_id=None, children=[]) for k, i in enumerate(open_ids)
    ]
    second = TreeBuilder.from_frontier(
        params, {STOP}, str, handed, completed=first.completed, node_count=first.node_count
    )
    local_paths = {k: paths[i] for k, i in enumerate(open_ids)}
    while not second.done():
        wanted = second.schedule(5)
        for i in second.update({i: fake_distribution(local_paths[i], 3) for i in wanted}):
            node = second.nodes[i]
            local_paths[i] = (*local_paths[node.parent_id], node.token_id)
    rebuilt = [(paths[n.id], len(n.children), n.threshold, n.finish_reason) for n in first.nodes]
    by_path = {p: (c, t, r) for p, c, t, r in rebuilt}
    for node in second.nodes:
        by_path[local_paths[node.id]] = (len(node.children), node.threshold, node.finish_reason)
    assert sorted(by_path.items()) == sorted((p, (c, t, r)) for p, c, t, r in whole)


def test_nodes_moved_in_and_out_keep_the_frontier_in_depth_order() -> None:
    """A worker's share changes: nodes taken in join in depth order; the deepest are given back."""
    params = TreeParams(max_depth=10)
    builder = TreeBuilder.from_frontier(params, {STOP}, str, [], completed=0, node_count=0)

    def open_node(depth: int, token: int) -> Node:
        return Node(id=-1, parent_id=None, token_id=token, text=str(token), depth=depth, prob=0.5,
                    logprob=-0.7, cumulative_prob=0.5)

    assert builder.adopt([open_node(3, 1), open_node(3, 2)]) == [0, 1]
    assert builder.adopt([open_node(2, 3), open_node(4, 4), open_node(3, 5)]) == [2, 3, 4]
    assert [n.id for n in builder.nodes] == [0, 1, 2, 3, 4]
    # Stable within a depth: 0, 1 were held before 4 came in at the same depth.
    assert list(builder.frontier) == [2, 0, 1, 4, 3]
    assert builder.release(2) == [4, 3]
    assert list(builder.frontier) == [2, 0, 1]
    assert builder.release(10) == [2, 0, 1] and builder.done()
    builder.adopt([open_node(1, 6), open_node(1, 7), open_node(1, 8)])
    builder.drop({6})
    assert list(builder.frontier) == [5, 7]
