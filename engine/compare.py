"""Two token trees of one prompt, lined up: what both explored, what only one did, where their most
probable paths part, and how far apart their next-token distributions are wherever both expanded a node.

Invariant: a node of tree A matches a node of tree B exactly when their token paths from the root are
equal (the two roots, the prompt, always match). Both trees are walked once together from the roots,
children matched by token id through a dict, so the cost grows with the trees' sizes (no pairwise
matching); only the candidates of nodes both trees expanded are read.

The distance between two next-token distributions is the total variation distance over the candidates
either tree recorded, with each side's unrecorded remainder (1 minus its recorded candidates) lumped into
one "other" bucket:

    TV = 1/2 * (sum over recorded tokens t of |p_A(t) - p_B(t)|  +  |other_A - other_B|)

A token recorded on one side only counts 0 on the other, whose mass for it (under that tree's
candidate threshold) is in its "other". Total variation rather than KL divergence because it is bounded
in [0, 1] (0: the same recorded distribution, 1: no token in common), symmetric, and defined when a token
is missing on one side (KL is infinite there); it reads as "the probability mass that moved".
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokentree.engine.tree import Candidate, Node

# What the report calls the measure, for readers of the JSON.
MEASURE = "total_variation"
# Metadata that may differ between compared trees, reported as differences (the prompt may not).
COMPARED_SETTINGS = ("model", "model_fingerprint", "dtype", "chat", "prefix")


class NotComparable(ValueError):
    """The two trees do not grow from the same prompt text."""


# A child's key among its siblings: its token id, or its text where a document has no token ids
# (seed-notebook files).
TokenKey = int | str


def _token_key(node: Node) -> TokenKey:
    return node.token_id if node.token_id is not None else node.text


def recorded_candidates(node: Node) -> list[Candidate]:
    """The node's recorded candidates, whether held as objects or as the JSON text a stored tree keeps."""
    if node.candidates_json is None:
        return node.candidates
    return [Candidate(token_id=int(c["token_id"]), text=str(c["text"]), prob=float(c["prob"]))
            for c in json.loads(node.candidates_json)]


def total_variation(a: Sequence[Candidate], b: Sequence[Candidate]) -> float:
    """The distance between two recorded distributions (see the module's docstring), in [0, 1]."""
    prob_a = {c.token_id: c.prob for c in a}
    prob_b = {c.token_id: c.prob for c in b}
    tokens = prob_a.keys() | prob_b.keys()
    moved = sum(abs(prob_a.get(token, 0.0) - prob_b.get(token, 0.0)) for token in tokens)
    # Recorded probabilities are rounded, so their sum may pass 1 by a hair: the remainder is never negative.
    other_a = max(0.0, 1.0 - sum(prob_a.values()))
    other_b = max(0.0, 1.0 - sum(prob_b.values()))
    return min(1.0, 0.5 * (moved + abs(other_a - other_b)))


@dataclass(frozen=True)
class TokenPath:
    """The tokens from the root (left out: it is the prompt) down to a node, and their text."""

    token_ids: list[int | None]
    text: str

    @classmethod
    def of(cls, path: Sequence[Node]) -> TokenPath:
        return cls(token_ids=[node.token_id for node in path], text="".join(node.text for node in path))


@dataclass(frozen=True)
class Disagreement:
    """A node both trees expanded, and how far apart its two next-token distributions are."""

    a_node: int  # the node's id in A
    b_node: int  # and in B
    a_position: int  # its position in A's node list (its token path is read from there when reported)
    depth: int
    distance: float
    a_candidates: list[Candidate]
    b_candidates: list[Candidate]

    def to_json(self, path: TokenPath) -> dict[str, Any]:
        return {
            "a_node": self.a_node, "b_node": self.b_node, "depth": self.depth, "tokens": path.token_ids,
            "text": path.text, "distance": self.distance,
            "a": [_candidate_json(c) for c in self.a_candidates],
            "b": [_candidate_json(c) for c in self.b_candidates],
        }


def _candidate_json(candidate: Candidate) -> dict[str, Any]:
    """What the distance read of a candidate: its token and recorded probability."""
    return {"token_id": candidate.token_id, "text": candidate.text, "prob": candidate.prob}


@dataclass(frozen=True)
class Parting:
    """Where the two most probable paths (from the root, the most probable child at each step) part: the
    last node they share with its token path, and each tree's next step from there (None where that
    tree's path ends)."""

    a_node: int  # the shared node's id in A
    b_node: int  # and in B
    depth: int
    path: TokenPath
    a_next: Node | None
    b_next: Node | None

    def to_json(self) -> dict[str, Any]:
        def step(node: Node | None) -> dict[str, Any] | None:
            if node is None:
                return None
            return {"node": node.id, "token_id": node.token_id, "text": node.text, "prob": node.prob}

        return {"a_node": self.a_node, "b_node": self.b_node, "depth": self.depth,
                "tokens": self.path.token_ids, "text": self.path.text, "a": step(self.a_next),
                "b": step(self.b_next)}


@dataclass(frozen=True)
class TreeComparison:
    """The comparison of trees A and B: node counts, the settings that differ, where the most probable
    paths part (None when they are the same path), and the disagreements, largest distance first."""

    prompt: str
    a_nodes: int
    b_nodes: int
    shared_nodes: int
    differences: dict[str, list[Any]]  # setting (parameters as "parameters.name") -> [A's, B's]
    notes: list[str]
    parting: Parting | None
    disagreements: list[Disagreement]
    # A's nodes and, for each shared node but the root, its parent's position: token paths are read back
    # only for the disagreements reported, so the walk itself stays linear however deep the trees are.
    a_tree: Sequence[Node]
    a_parents: dict[int, int]

    @property
    def only_a(self) -> int:
        return self.a_nodes - self.shared_nodes

    @property
    def only_b(self) -> int:
        return self.b_nodes - self.shared_nodes

    def path(self, disagreement: Disagreement) -> TokenPath:
        """The token path to a disagreement's node."""
        chain = []
        at = disagreement.a_position
        while at != 0:
            chain.append(self.a_tree[at])
            at = self.a_parents[at]
        chain.reverse()
        return TokenPath.of(chain)

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        """The report (see the README's "Comparing two trees"); `top`: keep the largest disagreements."""
        return {
            "prompt": self.prompt, "measure": MEASURE,
            "a": {"nodes": self.a_nodes}, "b": {"nodes": self.b_nodes},
            "shared_nodes": self.shared_nodes, "only_a": self.only_a, "only_b": self.only_b,
            "differences": self.differences, "notes": self.notes,
            "parting": None if self.parting is None else self.parting.to_json(),
            "shared_expanded": len(self.disagreements),
            "disagreements": [d.to_json(self.path(d)) for d in self.disagreements[:top]],
        }


def prompt_of(metadata: dict[str, Any], nodes: Sequence[Node]) -> str:
    """The prompt text a tree grew from: its metadata's, else its root's text."""
    prompt = metadata.get("prompt")
    return prompt if isinstance(prompt, str) else nodes[0].text


def _differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    found = {key: [a.get(key), b.get(key)] for key in COMPARED_SETTINGS if a.get(key) != b.get(key)}
    params_a, params_b = a.get("parameters") or {}, b.get("parameters") or {}
    for name in sorted(params_a.keys() | params_b.keys()):
        if params_a.get(name) != params_b.get(name):
            found[f"parameters.{name}"] = [params_a.get(name), params_b.get(name)]
    return found


def _notes(differences: dict[str, list[Any]]) -> list[str]:
    notes = []
    if "chat" in differences:
        notes.append("one tree wraps the prompt in the chat template and the other does not: the same "
                     "token paths follow different contexts")
    if "prefix" in differences:
        notes.append("the trees force different response prefixes: the same token paths follow different "
                     "contexts")
    return notes


def _most_probable_child(nodes: Sequence[Node], node: Node) -> Node | None:
    best = None
    for child in node.children:  # ties: the first child
        if best is None or nodes[child].prob > best.prob:
            best = nodes[child]
    return best


def compare_trees(a_nodes: Sequence[Node], a_metadata: dict[str, Any],
                  b_nodes: Sequence[Node], b_metadata: dict[str, Any]) -> TreeComparison:
    """Line up tree A and tree B (each a flat node list, the root first, `children` holding list
    positions). Raises `NotComparable` when their prompt texts differ."""
    prompt_a, prompt_b = prompt_of(a_metadata, a_nodes), prompt_of(b_metadata, b_nodes)
    if prompt_a != prompt_b:
        raise NotComparable(f"the trees grow from different prompts ({_short(prompt_a)} and "
                            f"{_short(prompt_b)}); only trees of the same prompt text can be compared")
    differences = _differences(a_metadata, b_metadata)
    shared = 0
    found: list[Disagreement] = []
    a_parents: dict[int, int] = {}
    queue: deque[tuple[int, int]] = deque([(0, 0)])  # matched pairs (A position, B position), breadth first
    while queue:
        a_at, b_at = queue.popleft()
        shared += 1
        node_a, node_b = a_nodes[a_at], b_nodes[b_at]
        if node_a.is_expanded and node_b.is_expanded:
            cands_a, cands_b = recorded_candidates(node_a), recorded_candidates(node_b)
            found.append(Disagreement(a_node=node_a.id, b_node=node_b.id, a_position=a_at, depth=node_a.depth,
                                      distance=total_variation(cands_a, cands_b),
                                      a_candidates=cands_a, b_candidates=cands_b))
        b_children = {_token_key(b_nodes[child]): child for child in node_b.children}
        for a_child in node_a.children:
            b_child = b_children.get(_token_key(a_nodes[a_child]))
            if b_child is not None:
                a_parents[a_child] = a_at
                queue.append((a_child, b_child))
    found.sort(key=lambda d: -d.distance)  # stable: equal distances stay shallowest first
    return TreeComparison(prompt=prompt_a, a_nodes=len(a_nodes), b_nodes=len(b_nodes), shared_nodes=shared,
                          differences=differences, notes=_notes(differences),
                          parting=_parting(a_nodes, b_nodes), disagreements=found,
                          a_tree=a_nodes, a_parents=a_parents)


def _parting(a_nodes: Sequence[Node], b_nodes: Sequence[Node]) -> Parting | None:
    """Follow both trees' most probable child from the roots while the tokens agree."""
    node_a, node_b = a_nodes[0], b_nodes[0]
    path: list[Node] = []
    while True:
        next_a, next_b = _most_probable_child(a_nodes, node_a), _most_probable_child(b_nodes, node_b)
        if next_a is None and next_b is None:
            return None  # one path, ending at the same node in both trees
        if next_a is None or next_b is None or _token_key(next_a) != _token_key(next_b):
            return Parting(a_node=node_a.id, b_node=node_b.id, depth=node_a.depth, path=TokenPath.of(path),
                           a_next=next_a, b_next=next_b)
        node_a, node_b = next_a, next_b
        path.append(node_a)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
