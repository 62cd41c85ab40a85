"""A plain sequential implementation of the branching rule, written from the rule's text alone.

It is the seed notebooks' strategy: one node at a time, a forward pass per node. The engine's tests
(tests/engine) and its benchmark (bench/engine_speed.py) compare the engine's trees with it
(`assert_matches_reference`). A sampler is given as `warp`, a function from a node's logits to the
probabilities the rule branches on (tests/engine/test_sampling.py applies transformers' warpers);
without one, the rule branches on the model's own probabilities. It shares no code with the engine
beyond the threshold formula's parameters, on purpose: a bug in the engine must not be hidden by the same
bug here.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tokentree.engine.tree import Node

PROB_TOLERANCE = 1e-4


@dataclass
class RefNode:
    token_id: int | None
    depth: int
    prob: float
    cumulative_prob: float
    raw_prob: float = 1.0  # the model's own, before the sampler
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


def next_token_probs(model, prompt_ids: list[int], node: RefNode, use_cache: bool) -> torch.Tensor:
    """The next-token distribution [V]."""
    return torch.softmax(next_token_logits(model, prompt_ids, node, use_cache), dim=-1)


@torch.inference_mode()
def next_token_logits(model, prompt_ids: list[int], node: RefNode, use_cache: bool) -> torch.Tensor:
    """The next-token logits [V] (fp32): a full forward, or one token on the cache copy the node holds."""
    if not use_cache:
        out = model(input_ids=torch.tensor([node.prefix(prompt_ids)]), use_cache=False)
    elif node.parent is None:
        node.cache = DynamicCache(config=model.config)
        out = model(torch.tensor([node.prefix(prompt_ids)]), None, None, node.cache, use_cache=True)
    else:
        out = model(torch.tensor([[node.token_id]]), None, None, node.cache, use_cache=True)
    return out.logits[0, -1].float()


def sequential_tree(
    model,
    prompt_ids: list[int],
    stop_ids: set[int],
    params: dict,
    use_cache: bool = False,
    depth_limit: int | None = None,
    warp: Callable[[torch.Tensor], torch.Tensor] | None = None,
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
        logits = next_token_logits(model, prompt_ids, node, use_cache)
        raw = torch.softmax(logits, dim=-1).tolist()
        probs = raw if warp is None else warp(logits).tolist()
        passes += 1
        ranked = sorted(((float(p), i) for i, p in enumerate(probs)), key=lambda x: (-x[0], x[1]))
        node.threshold, node.queue_depth = threshold, queue_depth
        node.candidates = [(i, p) for p, i in ranked[: params.get("max_candidates", 10)]
                           if p > params["candidate_threshold"]]
        chosen = [(p, i) for p, i in ranked if p > threshold] or ranked[:1]
        for p, i in chosen[: params["max_nodes"] - len(nodes)]:
            child = RefNode(
                token_id=i,
                depth=node.depth + 1,
                prob=p,
                cumulative_prob=node.cumulative_prob * p,
                raw_prob=raw[i],
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
        raw_prob = node.prob if node.raw_prob is None else node.raw_prob
        assert _close(raw_prob, ref.raw_prob), f"{where}: raw_prob {raw_prob} vs {ref.raw_prob}"
        assert _close(node.cumulative_prob, ref.cumulative_prob), (
            f"{where}: cumulative_prob {node.cumulative_prob} vs {ref.cumulative_prob}"
        )
        assert node.finish_reason == ref.finish_reason, where
        assert node.queue_depth == ref.queue_depth, where
        mine = [(c.token_id, c.prob) for c in node.candidates]
        assert _same_candidates(mine, ref.candidates), f"{where}: candidates {mine} vs {ref.candidates}"
        assert len(node.children) == len(ref.children), where
        if ref.children:
            unexplored = 1.0 - sum(c.prob for c in ref.children)
            assert node.unexplored_mass is not None and _close(node.unexplored_mass, unexplored), where
        pending.extend(zip(node.children, ref.children, strict=True))
        compared += 1
    assert compared == len(nodes)
    return compared


def _same_candidates(mine: list[tuple[int, float]], theirs: list[tuple[int, float]]) -> bool:
    """The same candidates, best first, with probabilities within PROB_TOLERANCE. Two tokens whose
    probabilities are that close may trade places, or the last place (which one a batch ranks first is
    the numerics' choice, as is any probability within the tolerance): a token out of place must have
    the probability, within the tolerance, of its place in the other list or of that list's last."""
    if len(mine) != len(theirs) or not all(_close(p, q) for (_, p), (_, q) in zip(mine, theirs, strict=True)):
        return False
    found = dict(theirs)
    last = theirs[-1][1] if theirs else 0.0
    return all(t == u or _close(p, found.get(t, last)) for (t, p), (u, _) in zip(mine, theirs, strict=True))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=PROB_TOLERANCE)
