"""Checks that a stored or distributed tree obeys the branching rule, node by node.

A tree built by several workers cannot be compared with a sequential build (each worker saw its own
|Q|), but every expanded node recorded the threshold and queue depth it used, so each node can still
be checked on its own: its threshold is the formula's for its queue depth, and its children are
exactly the recorded candidates above that threshold (or the best one, when none is above it).
"""

from __future__ import annotations

from collections.abc import Collection

from tokentree.engine.params import TreeParams, branch_threshold
from tokentree.engine.tree import Node

TOLERANCE = 1e-9


def rule_violations(nodes: list[Node], params: TreeParams, stop_ids: Collection[int]) -> list[str]:
    """Every way `nodes` break the rule; empty when they follow it. Node ids index `nodes`."""
    problems: list[str] = []
    stops = frozenset(stop_ids)
    completed = 0
    for node in nodes:
        where = f"node {node.id} (depth {node.depth})"
        if node.depth > params.max_depth:
            problems.append(f"{where}: deeper than max_depth {params.max_depth}")
        if node.finish_reason == "stop":
            completed += 1
            if node.token_id not in stops:
                problems.append(f"{where}: finished as a stop but token {node.token_id} is no stop token")
        if node.is_expanded:
            problems.extend(_expansion_problems(node, nodes, params, stops, where))
        elif node.children:
            problems.append(f"{where}: has children but no recorded expansion")
    if len(nodes) > params.max_nodes:
        problems.append(f"{len(nodes)} nodes, above max_nodes {params.max_nodes}")
    if completed > params.max_completed_paths:
        problems.append(
            f"{completed} completed paths, above max_completed_paths {params.max_completed_paths}"
        )
    return problems


def _expansion_problems(
    node: Node, nodes: list[Node], params: TreeParams, stops: frozenset[int], where: str
) -> list[str]:
    problems = []
    if node.token_id in stops or node.depth >= params.max_depth:
        problems.append(f"{where}: expanded although it should have finished")
    assert node.threshold is not None and node.queue_depth is not None
    expected = branch_threshold(node.queue_depth, params)
    if abs(node.threshold - expected) > TOLERANCE:
        problems.append(
            f"{where}: threshold {node.threshold} but the formula gives {expected} for |Q|={node.queue_depth}"
        )
    children = [nodes[i] for i in node.children]
    if not children:
        return [*problems, f"{where}: expanded without children"]
    probs = [c.prob for c in children]
    if probs != sorted(probs, reverse=True):
        problems.append(f"{where}: children not best first")
    above = [c for c in children if c.prob > node.threshold]
    if len(children) > 1 and len(above) != len(children):
        problems.append(f"{where}: a child at or below the threshold {node.threshold}")
    if (
        len(children) == 1
        and not above
        and node.candidates
        and children[0].token_id != node.candidates[0].token_id
    ):
        problems.append(f"{where}: the only child is not the most likely token")
    child_tokens = {c.token_id for c in children}
    missed = [
        c.token_id for c in node.candidates if c.prob > node.threshold and c.token_id not in child_tokens
    ]
    if missed and len(nodes) < params.max_nodes:  # the max_nodes cap may cut children short
        problems.append(f"{where}: candidates {missed} are above the threshold but have no node")
    for child in children:
        if child.parent_id != node.id or child.depth != node.depth + 1:
            problems.append(f"{where}: child {child.id} is not linked to it")
    return problems
