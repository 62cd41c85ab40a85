"""The token tree: nodes, the completed paths, the probability mass it covers, and the seed's JSON layout.

Nodes live in one flat list indexed by id (parents before children), so a tree of any depth is walked
without recursion; the nested JSON is written with an explicit stack for the same reason.

The JSON is the seed's layout plus ours. A node's and a candidate's `prob`/`logprob` are the sampler's
(engine/sampling.py), `raw_prob`/`raw_logprob` the model's own; an expanded node's `unexplored_mass` is
the probability its children leave out; a token whose text is not valid UTF-8 on its own (a piece of a
character: its text shows U+FFFD) carries its `bytes`, a list of ints as OpenAI's logprobs give them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
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
    """A competing next token seen at a node. Only callers without them (hand-made trees, documents
    written before) leave `logprob` (then null) and the raw figures (then the processed ones) out."""

    token_id: int
    text: str
    prob: float
    logprob: float | None = None
    raw_prob: float | None = None
    raw_logprob: float | None = None
    token_bytes: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """The seed's `text`, `prob` (rounded) and `token_id`, then the full-precision `logprob`, the raw
        `raw_prob` (rounded alike) and `raw_logprob`, and `bytes` where the text is not valid UTF-8."""
        raw_prob = self.prob if self.raw_prob is None else self.raw_prob
        out: dict[str, Any] = {
            "text": self.text, "prob": float(round(self.prob, CANDIDATE_PROB_DIGITS)),
            "token_id": self.token_id, "logprob": self.logprob,
            "raw_prob": float(round(raw_prob, CANDIDATE_PROB_DIGITS)),
            "raw_logprob": self.logprob if self.raw_logprob is None else self.raw_logprob,
        }
        if self.token_bytes is not None:
            out["bytes"] = list(self.token_bytes)
        return out

    def json_text(self) -> str:
        """`to_json`'s object as json.dumps writes it, written by hand (every stored candidate is)."""
        raw_prob = self.prob if self.raw_prob is None else self.raw_prob
        raw_logprob = self.logprob if self.raw_logprob is None else self.raw_logprob
        return (
            f'{{"text": {_string(self.text)}, "prob": {float(round(self.prob, CANDIDATE_PROB_DIGITS))!r}, '
            f'"token_id": {self.token_id}, "logprob": {_float(self.logprob)}, '
            f'"raw_prob": {float(round(raw_prob, CANDIDATE_PROB_DIGITS))!r}, '
            f'"raw_logprob": {_float(raw_logprob)}{_bytes_member(self.token_bytes)}}}'
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
    # The model's own probability of the token, before the sampler (None: the same as `prob`).
    raw_prob: float | None = None
    raw_logprob: float | None = None
    token_bytes: bytes | None = None  # where `text` is not valid UTF-8 on its own
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
    unexplored_mass: float | None = None  # 1 - the children's probabilities (`unexplored_mass`)
    children: list[int] = field(default_factory=list)

    @property
    def is_expanded(self) -> bool:
        return self.threshold is not None


@dataclass(frozen=True)
class CompletedPath:
    """A path that reached a stop token; `text` is its response (`response_text`: the forced prefix, then
    its tokens)."""

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


def unexplored_mass(child_probs: Sequence[float]) -> float:
    """The probability an expanded node's children leave out: 1 minus theirs (never below 0, which
    float sums can dip under)."""
    return max(0.0, 1.0 - math.fsum(child_probs))


@dataclass(frozen=True)
class Coverage:
    """How much of the (sampler's) probability a tree covers: the total probability of its completed
    paths, and of all its leaves (completed, cut at max_depth, or still open). The rest, 1 - leaf_mass,
    is the mass left unexplored at expanded nodes, to tokens that got no child."""

    completed_mass: float
    leaf_mass: float

    def to_json(self) -> dict[str, float]:
        return {"completed_mass": self.completed_mass, "leaf_mass": self.leaf_mass}


def coverage(nodes: Sequence[Node]) -> Coverage:
    """One pass over the nodes."""
    completed = math.fsum(n.cumulative_prob for n in nodes if n.finish_reason == "stop")
    leaves = math.fsum(n.cumulative_prob for n in nodes if not n.children)
    return Coverage(completed_mass=completed, leaf_mass=leaves)


def path_to(nodes: list[Node], node_id: int) -> list[Node]:
    """The nodes from the root's first child down to `node_id`."""
    path: list[Node] = []
    node = nodes[node_id]
    while node.parent_id is not None:
        path.append(node)
        node = nodes[node.parent_id]
    path.reverse()
    return path


def response_text(prefix: str | None, token_texts: Iterable[str]) -> str:
    """What a path says after the prompt: the forced prefix (the tree's `metadata.prefix`: it is part of
    the response, though not of the tree's tokens), then its tokens' texts. A path's whole text is the
    prompt (the root's text) followed by this; in chat mode the prompt went through the chat template,
    and this is the model's response alone."""
    return (prefix or "") + "".join(token_texts)


def completed_paths(nodes: list[Node], prefix: str | None = None) -> list[CompletedPath]:
    """Paths that reached a stop token, most probable first (ties: first found first); their text begins
    with the forced `prefix`."""
    found = []
    for node in nodes:
        if node.finish_reason == "stop":
            path = path_to(nodes, node.id)
            found.append(
                CompletedPath(
                    node_id=node.id,
                    token_ids=[n.token_id for n in path if n.token_id is not None],
                    text=response_text(prefix, (n.text for n in path)),
                    cumulative_prob=node.cumulative_prob,
                )
            )
    return sorted(found, key=lambda p: -p.cumulative_prob)


def _number(value: float | int | None) -> str:
    return "null" if value is None else repr(value)


def _float(value: float | None) -> str:
    # float() first: a numpy scalar's repr is not JSON.
    return "null" if value is None else repr(float(value))


def _bytes_member(token_bytes: bytes | None) -> str:
    """`, "bytes": [...]` for a token that has them, else nothing."""
    return "" if token_bytes is None else ', "bytes": [' + ", ".join(map(str, token_bytes)) + "]"


def candidates_json(candidates: Sequence[Candidate]) -> str:
    """Candidates as the tree JSON shows them: `[{"text": ..., "prob": ..., "token_id": ..., ...}, ...]`."""
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
    prob = _float(round(node.prob, NODE_PROB_DIGITS))
    logprob = _float(node.logprob)
    # No sampler (raw None, or equal): the processed figures' text serves again.
    raw_prob = prob if node.raw_prob is None or node.raw_prob == node.prob else \
        _float(round(node.raw_prob, NODE_PROB_DIGITS))
    raw_logprob = logprob if node.raw_logprob is None or node.raw_logprob == node.logprob else \
        _float(node.raw_logprob)
    token_bytes = "" if node.token_bytes is None else _bytes_member(node.token_bytes)
    return (
        f'{{"id": {node.id}, "text": {_string(node.text)}{token_bytes}, "prob": {prob}, '
        f'"logprob": {logprob}, "cumulative_prob": {_float(node.cumulative_prob)}, '
        f'"raw_prob": {raw_prob}, "raw_logprob": {raw_logprob}, '
        f'"token_id": {_number(node.token_id)}, "depth": {node.depth}, '
        f'"is_finished": {"true" if node.is_finished else "false"}, "finish_reason": {reason}, '
        f'"threshold": {_float(node.threshold)}, "queue_depth": {_number(node.queue_depth)}, '
        f'"entropy": {_float(node.entropy)}, "unexplored_mass": {_float(node.unexplored_mass)}, '
        f'"candidates": {candidates}, "child_count": {child_count}, '
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
