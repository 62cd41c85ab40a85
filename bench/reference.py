"""A plain sequential implementation of the branching rule, written from the rule's text alone.

It is the seed notebooks' strategy: one node at a time, a forward pass per node. The engine's tests
(tests/engine) and its benchmark (bench/engine_speed.py) compare the engine's trees with it
(`assert_matches_reference`). It shares no code with the engine beyond the threshold formula's
parameters, on purpose: a bug in the engine must not be hidden by the same bug here.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from engine.tree import Node

PROB_TOLERANCE = 1e-4


@dataclass
class RefNode:
    token_id: int | None
    depth: int
    prob: float
    cumulative_prob: float
    parent: RefNode | None = None
    children: list[RefNode] = field(default_factory=list)
    candidates: list[tuple[int, float]] = field(default_factory=list)
    threshold: float | None = None
    queue_depth: int | None = None
    finish_reason: str | None = None
    cache: object | None = None

    def prefix(self, prompt_ids: list[int]) -> list[int]:
        tokens = []
        node: RefNode | None = self
        while node is not None and node.token_id is not None:
            tokens.append(node.token_id)
            node = node.parent
        return prompt_ids + tokens[::-1]


@dataclass
class RefTree:
    root: RefNode
    nodes: list[RefNode]
    completed: int
    forward_passes: int


@torch.inference_mode()
def next_token_probs(model, prompt_ids: list[int], node: RefNode, use_cache: bool) -> torch.Tensor:
    """The next-token distribution [V]: a full forward, or one token on the cache copy the node holds."""
    if not use_cache:
        out = model(input_ids=torch.tensor([node.prefix(prompt_ids)]), use_cache=False)
    elif node.parent is None:
        node.cache = DynamicCache(config=model.config)
        out = model(torch.tensor([node.prefix(prompt_ids)]), None, None, node.cache, use_cache=True)
    else:
        out = model(torch.tensor([[node.token_id]]), None, None, node.cache, use_cache=True)
    return torch.softmax(out.logits[0, -1].float(), dim=-1)


def sequential_tree(
    model,
    prompt_ids: list[int],
    stop_ids: set[int],
    params: dict,
    use_cache: bool = False,
    depth_limit: int | None = None,
) -> RefTree:
    """Expand the tree one popped node at a time, exactly as the rule reads."""
    t_min, t_max = params["min_branch_threshold"], params["max_branch_threshold"]
    max_depth = params["max_depth"] if depth_limit is None else min(params["max_depth"], depth_limit)
    root = RefNode(token_id=None, depth=0, prob=1.0, cumulative_prob=1.0)
    nodes = [root]
    queue = deque([root])
    completed = 0
    passes = 0
    while queue and completed < params["max_completed_paths"] and len(nodes) < params["max_nodes"]:
        threshold = t_min + min(1.0, len(queue) / params["soft_queue_limit"]) * (t_max - t_min)
        queue_depth = len(queue)
        node = queue.popleft()
        if node.depth >= max_depth:
            node.finish_reason = "max_depth"
            continue
        if node.token_id in stop_ids:
            node.finish_reason = "stop"
            completed += 1
            continue
        probs = next_token_probs(model, prompt_ids, node, use_cache)
        passes += 1
        ranked = sorted(((float(p), i) for i, p in enumerate(probs.tolist())), key=lambda x: (-x[0], x[1]))
        node.threshold, node.queue_depth = threshold, queue_depth
        node.candidates = [(i, p) for p, i in ranked[:10] if p > params["candidate_threshold"]]
        chosen = [(p, i) for p, i in ranked if p > threshold] or ranked[:1]
        for p, i in chosen[: params["max_nodes"] - len(nodes)]:
            child = RefNode(
                token_id=i,
                depth=node.depth + 1,
                prob=p,
                cumulative_prob=node.cumulative_prob * p,
                parent=node,
            )
            if use_cache:
                # The seed's way: every child queues with a full copy of its parent's cache.
                child.cache = copy.deepcopy(node.cache)
            node.children.append(child)
            nodes.append(child)
            queue.append(child)
        node.cache = None  # the queued children hold the copies: memory follows the queue
    return RefTree(root=root, nodes=nodes, completed=completed, forward_passes=passes)


def assert_matches_reference(nodes: Sequence[Node], root: RefNode) -> int:
    """The engine's `nodes` (root first) are the reference tree under `root`: the same tokens, children in
    the same order, the same rule inputs and candidates, probabilities within PROB_TOLERANCE. Walks both
    breadth first; returns how many nodes were compared."""
    pending = deque([(0, root)])
    compared = 0
    while pending:
        node_id, ref = pending.popleft()
        node = nodes[node_id]
        where = f"node {node_id} at depth {node.depth}"
        assert node.token_id == ref.token_id, where
        assert _close(node.prob, ref.prob), f"{where}: prob {node.prob} vs {ref.prob}"
        assert _close(node.cumulative_prob, ref.cumulative_prob), (
            f"{where}: cumulative_prob {node.cumulative_prob} vs {ref.cumulative_prob}"
        )
        assert node.finish_reason == ref.finish_reason, where
        assert node.queue_depth == ref.queue_depth, where
        assert [c.token_id for c in node.candidates] == [t for t, _ in ref.candidates], where
        mine, theirs = [c.prob for c in node.candidates], [p for _, p in ref.candidates]
        assert all(map(_close, mine, theirs)), f"{where}: candidates' probs {mine} vs {theirs}"
        assert len(node.children) == len(ref.children), where
        pending.extend(zip(node.children, ref.children, strict=True))
        compared += 1
    assert compared == len(nodes)
    return compared


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=PROB_TOLERANCE)
