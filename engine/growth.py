"""Growing a finished tree in place, as pure rules the service and the command line share.

A growth starts the branching rule again from one node of a stored tree: a recorded candidate of an
expanded node made its new child, or a leaf the depth limit (or another limit) left unexpanded ("this
node, more"). The invariant: the growth's subtree is the sequential rule run from that start node alone,
as if it were a fresh tree's root, with probabilities kept absolute (a node's `cumulative_prob` is the
product down from the prompt, as everywhere else in the tree). So its limits count from where it
starts: `max_nodes` bounds the growth's subtree (its start node included, as a fresh tree's root is),
`max_completed_paths` the paths it completes, and `max_depth` the tokens below its start node. The
builder only knows whole-tree counts, so `growth_params` moves those limits by the tree's size outside
the growth.

The child a candidate becomes has the candidate's probability at full precision: from its `logprob`
where the candidates record one, else from its `prob`, rounded to 4 digits when it was written
(`prob_source` says which).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tokentree.engine.params import MAX_DEPTH_LIMIT, MAX_NODES_LIMIT, TreeParams

ProbSource = Literal["logprob", "rounded prob"]


class GrowthRefused(ValueError):
    """A growth that cannot be made; `field` names what is wrong ("node_id" or "token_id")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class CandidateChild:
    """The node a recorded candidate becomes, before it has an id."""

    token_id: int
    text: str
    prob: float  # the sampler's, at full precision where the candidate recorded its logprob
    logprob: float
    cumulative_prob: float
    depth: int
    raw_prob: float | None
    raw_logprob: float | None
    token_bytes: bytes | None
    prob_source: ProbSource


def candidate_child(candidates: Sequence[Mapping[str, Any]], token_id: int,
                    child_tokens: Sequence[int | None], parent_cumulative: float,
                    parent_depth: int) -> CandidateChild:
    """The child `token_id` makes among a node's recorded `candidates` (the tree JSON's objects);
    `child_tokens` are the tokens of the children it has. Refuses a token not recorded or already a
    child."""
    if not candidates:
        raise GrowthRefused("token_id", "the node records no candidates (it was never expanded)")
    found = next((c for c in candidates if c.get("token_id") == token_id), None)
    if found is None:
        recorded = ", ".join(str(c.get("token_id")) for c in candidates)
        raise GrowthRefused("token_id",
                            f"{token_id} is not among the node's recorded candidates ({recorded})")
    if token_id in child_tokens:
        raise GrowthRefused("token_id", f"{token_id} is a child of the node already")
    logprob = found.get("logprob")
    source: ProbSource = "logprob" if logprob is not None else "rounded prob"
    prob = math.exp(logprob) if logprob is not None else float(found["prob"])
    if logprob is None:
        logprob = math.log(prob) if prob > 0 else -math.inf
    raw_logprob = found.get("raw_logprob")
    raw_prob = math.exp(raw_logprob) if raw_logprob is not None else found.get("raw_prob")
    listed = found.get("bytes")
    return CandidateChild(token_id=token_id, text=str(found["text"]), prob=prob, logprob=float(logprob),
                          cumulative_prob=parent_cumulative * prob, depth=parent_depth + 1,
                          raw_prob=raw_prob, raw_logprob=raw_logprob,
                          token_bytes=None if listed is None else bytes(listed), prob_source=source)


def check_more(is_expanded: bool, finish_reason: str | None) -> None:
    """"This node, more" grows a leaf that a limit left unexpanded: not an expanded node (grow one of
    its candidates instead), nor a path that ended at a stop token."""
    if is_expanded:
        raise GrowthRefused("node_id", "the node is expanded already; grow one of its candidates "
                                       "(a token_id) instead")
    if finish_reason == "stop":
        raise GrowthRefused("node_id", "the node ends its path at a stop token; there is nothing after it")


def growth_params(params: TreeParams, outside_nodes: int, completed_before: int,
                  start_depth: int) -> TreeParams:
    """The rule's parameters as a builder holding whole-tree counts applies them to a growth (module
    docstring): `outside_nodes` are the tree's nodes outside the growth's subtree, `completed_before`
    its completed paths when the growth starts, `start_depth` the start node's depth. Capped at the
    engine's ceilings."""
    return dataclasses.replace(
        params,
        max_nodes=min(MAX_NODES_LIMIT, outside_nodes + params.max_nodes),
        max_completed_paths=min(MAX_NODES_LIMIT, completed_before + params.max_completed_paths),
        max_depth=min(MAX_DEPTH_LIMIT, start_depth + params.max_depth),
    )


@dataclass
class GrowthRecord:
    """One growth as a tree's metadata records it (`metadata.growths`, a job's `growths`).

    `node_id`/`token_id`: what was asked (token_id None: "this node, more"); `start_node_id`: the node
    the rule started from (the new child, or the node itself); `by`: the API key's id (None: anonymous or
    the command line); `at`: when (ISO 8601, the database's clock in the service); `parameters`: the
    growth's rule parameters as given (limits counted from the growth's start); the tree's node and
    completed-path counts before and after (`*_after` None until it ends); `last_node_before`: the
    largest node id before the growth (every node above it is the growth's)."""

    node_id: int
    token_id: int | None
    parameters: dict[str, Any]
    by: str | None
    at: str
    nodes_before: int
    completed_before: int
    start_node_id: int
    start_depth: int
    last_node_before: int
    prob_source: ProbSource | None = None
    nodes_after: int | None = None
    completed_after: int | None = None

    @property
    def outside_nodes(self) -> int:
        """The tree's nodes outside the growth's subtree when it started (`growth_params`)."""
        return self.nodes_before if self.token_id is not None else self.nodes_before - 1

    def rule_params(self) -> TreeParams:
        """The parameters a builder holding whole-tree counts grows this growth with."""
        return growth_params(TreeParams.from_dict(self.parameters), self.outside_nodes, self.completed_before,
                             self.start_depth)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> GrowthRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
