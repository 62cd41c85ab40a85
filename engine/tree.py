"""The token tree: nodes, the completed paths, and the seed's JSON layout.

Nodes live in one flat list indexed by id (parents before children), so a tree of any depth is walked
without recursion; the nested JSON is written with an explicit stack for the same reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "max_depth"]

# JSON strings as json.dumps writes them (ASCII-escaped), by the C encoder json.dumps itself uses.
_string = json.encoder.encode_basestring_ascii

# Printed probabilities keep the seed's precision: 6 digits on nodes, 4 on candidates.
NODE_PROB_DIGITS = 6
CANDIDATE_PROB_DIGITS = 4


@dataclass(frozen=True)
class Candidate:
    """A competing next token seen at a node."""

    token_id: int
    text: str
    prob: float

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "prob": round(self.prob, CANDIDATE_PROB_DIGITS), "token_id": self.token_id}

    def json_text(self) -> str:
        return (
            f'{{"text": {_string(self.text)}, "prob": {float(round(self.prob, CANDIDATE_PROB_DIGITS))!r}, '
            f'"token_id": {self.token_id}}}'
        )


@dataclass
class Node:
    """One token of one path. The root (id 0) stands for the prompt and has no token."""

    id: int
    parent_id: int | None
    token_id: int | None
    text: str
    depth: int
    prob: float
    logprob: float
    cumulative_prob: float
    is_finished: bool = False
    finish_reason: FinishReason | None = None
    # Filled when the node is expanded: what the model saw next, and the rule's inputs.
    candidates: list[Candidate] = field(default_factory=list)
    # The candidates' JSON text when it comes ready-made (a stored tree read back): then `candidates`
    # is left empty, and the text is served as it was written, never parsed.
    candidates_json: str | None = None
    threshold: float | None = None
    queue_depth: int | None = None
    entropy: float | None = None
    children: list[int] = field(default_factory=list)

    @property
    def is_expanded(self) -> bool:
        return self.threshold is not None


@dataclass(frozen=True)
class CompletedPath:
    """A path that reached a stop token."""

    node_id: int
    token_ids: list[int]
    text: str
    cumulative_prob: float

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "text": self.text,
            "cumulative_prob": self.cumulative_prob,
            "tokens": self.token_ids,
        }


def path_to(nodes: list[Node], node_id: int) -> list[Node]:
    """The nodes from the root's first child down to `node_id`."""
    path: list[Node] = []
    node = nodes[node_id]
    while node.parent_id is not None:
        path.append(node)
        node = nodes[node.parent_id]
    path.reverse()
    return path


def completed_paths(nodes: list[Node]) -> list[CompletedPath]:
    """Paths that reached a stop token, most probable first (ties: first found first)."""
    found = []
    for node in nodes:
        if node.finish_reason == "stop":
            path = path_to(nodes, node.id)
            found.append(
                CompletedPath(
                    node_id=node.id,
                    token_ids=[n.token_id for n in path if n.token_id is not None],
                    text="".join(n.text for n in path),
                    cumulative_prob=node.cumulative_prob,
                )
            )
    return sorted(found, key=lambda p: -p.cumulative_prob)


def _number(value: float | int | None) -> str:
    return "null" if value is None else repr(value)


def _float(value: float | None) -> str:
    # float() first: a numpy scalar's repr is not JSON.
    return "null" if value is None else repr(float(value))


def candidates_json(candidates: Sequence[Candidate]) -> str:
    """Candidates as the tree JSON shows them: `[{"text": ..., "prob": ..., "token_id": ...}, ...]`."""
    return "[" + ", ".join(c.json_text() for c in candidates) + "]"


def node_json_head(node: Node, child_count: int) -> str:
    """A node's JSON object up to its children: `{"id": ..., ..., "children": [`.

    Written by hand rather than through json.dumps of a dict: trees of 100,000 nodes are served often,
    and this is several times faster. Floats print as json.dumps prints them (their repr).
    """
    candidates = node.candidates_json
    if candidates is None:
        candidates = candidates_json(node.candidates)
    reason = "null" if node.finish_reason is None else _string(node.finish_reason)
    return (
        f'{{"id": {node.id}, "text": {_string(node.text)}, '
        f'"prob": {_float(round(node.prob, NODE_PROB_DIGITS))}, '
        f'"logprob": {_float(node.logprob)}, "cumulative_prob": {_float(node.cumulative_prob)}, '
        f'"token_id": {_number(node.token_id)}, "depth": {node.depth}, '
        f'"is_finished": {"true" if node.is_finished else "false"}, "finish_reason": {reason}, '
        f'"threshold": {_float(node.threshold)}, "queue_depth": {_number(node.queue_depth)}, '
        f'"entropy": {_float(node.entropy)}, "candidates": {candidates}, "child_count": {child_count}, '
        f'"children": ['
    )


def iter_tree_json(nodes: list[Node], root_id: int = 0, max_depth: int | None = None) -> Iterator[str]:
    """Yield the nested seed-layout JSON of the subtree at `root_id`, in pieces, without recursion.

    `max_depth` counts levels below the subtree's root; deeper nodes are left out and their parent
    says how many children it has through `child_count`.
    """
    base_depth = nodes[root_id].depth
    # Each stack entry is either a node id to open or a literal string to emit.
    stack: list[int | str] = [root_id]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        node = nodes[item]
        within = max_depth is None or node.depth - base_depth < max_depth
        kids = node.children if within else []
        yield node_json_head(node, len(node.children))
        stack.append("]}")
        for index in range(len(kids) - 1, -1, -1):
            stack.append(kids[index])
            if index > 0:
                stack.append(", ")


def tree_json_text(
    nodes: list[Node], metadata: dict[str, Any], root_id: int = 0, max_depth: int | None = None
) -> str:
    """The whole document: `{"metadata": ..., "tree": ...}`."""
    head = '{"metadata": ' + json.dumps(metadata) + ', "tree": '
    return head + "".join(iter_tree_json(nodes, root_id, max_depth)) + "}"
