"""Growing a tree held in this process (a file's, `tokentree tree --from`) in place, by the rules of
engine/growth.py: the subtree a growth adds is the sequential rule run from its start node alone.

The tree is the flat list `tokentree.Tree` holds: parents before children, `children` holding positions
in the list, `parent_id` and `id` the document's ids. The growth runs in a builder of its own
(`TreeBuilder.from_frontier` over the start node, evaluated from its token path below the prompt as a
node taken over from elsewhere is), then its nodes join the list with fresh ids above the largest one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokentree.engine.expand import DEFAULT_MAX_BATCH, BatchProgressCallback, Expander, run_trees, top_k_for
from tokentree.engine.growth import GrowthRecord, GrowthRefused, candidate_child, check_more
from tokentree.engine.loading import LoadedModel, encode_prompt
from tokentree.engine.params import TreeParams
from tokentree.engine.runner import ModelRunner
from tokentree.engine.scheduler import TreeBuilder
from tokentree.engine.tree import Node, coverage, unexplored_mass


@dataclass(frozen=True)
class GrowthPlan:
    """A growth checked against the tree, before any model work: its record so far, its start node (local
    id 0, as `TreeBuilder.from_frontier` takes it) and the start node's tokens below the prompt."""

    record: GrowthRecord
    start: Node
    path: list[int]
    position: int  # the grown node's position in the tree's list


def plan_growth(nodes: list[Node], metadata: dict[str, Any], node_id: int, token_id: int | None,
                params: TreeParams | None = None) -> GrowthPlan:
    """Check a growth of the tree `nodes` from node `node_id` (its candidate `token_id`, or with None the
    leaf itself) with `params` (default: the tree's own). Raises GrowthRefused naming node_id or
    token_id."""
    position = {node.id: index for index, node in enumerate(nodes)}.get(node_id)
    if position is None:
        raise GrowthRefused("node_id", f"{node_id} is not a node of this tree")
    params = TreeParams.from_dict(dict(metadata.get("parameters") or {})) if params is None else params
    node = nodes[position]
    if token_id is None:
        check_more(node.is_expanded, node.finish_reason)
        start = dataclasses.replace(node, id=0, parent_id=None, is_finished=False, finish_reason=None,
                                    children=[])
        prob_source = None
    else:
        child = candidate_child([c.to_json() for c in node.candidates], token_id,
                                [nodes[c].token_id for c in node.children],
                                node.cumulative_prob, node.depth)
        start = Node(id=0, parent_id=None, token_id=token_id, text=child.text, depth=child.depth,
                     prob=child.prob, logprob=child.logprob, cumulative_prob=child.cumulative_prob,
                     raw_prob=child.raw_prob, raw_logprob=child.raw_logprob, token_bytes=child.token_bytes)
        prob_source = child.prob_source
    path = _tokens_to(nodes, _parent_positions(nodes), position) + ([] if token_id is None else [token_id])
    record = GrowthRecord(
        node_id=node_id, token_id=token_id, parameters=params.to_dict(), by=None,
        at=datetime.now(UTC).isoformat(), nodes_before=len(nodes),
        completed_before=sum(1 for n in nodes if n.finish_reason == "stop"),
        start_node_id=node_id, start_depth=start.depth, last_node_before=max(n.id for n in nodes),
        prob_source=prob_source)
    return GrowthPlan(record, start, path, position)


def grow_tree(lm: LoadedModel, nodes: list[Node], metadata: dict[str, Any], plan: GrowthPlan, *,
              max_batch: int = DEFAULT_MAX_BATCH, on_progress: BatchProgressCallback | None = None
              ) -> GrowthRecord:
    """Grow the tree `nodes` (with its document's `metadata`) in place as `plan` says: the new nodes join
    the list, the growth is appended to `metadata["growths"]` and returned. The tree's prompt, chat and
    prefix are encoded again with `lm`, which must be the model that built it (GrowthRefused naming
    "model" otherwise)."""
    _check_model(lm, metadata)
    prompt_ids = encode_prompt(lm, str(metadata.get("prompt", nodes[0].text)),
                               chat=bool(metadata.get("chat")), prefix=metadata.get("prefix"))
    recorded_ids = metadata.get("prompt_token_ids")
    if recorded_ids is not None and list(recorded_ids) != prompt_ids:
        raise GrowthRefused("model", f"the prompt encodes to other tokens with {lm.spec.name!r} than the "
                                     "tree recorded (prompt_token_ids): its tokenizer differs")
    record = plan.record
    rule = record.rule_params()
    depth_limit = None if lm.context_length is None else lm.context_length - len(prompt_ids)
    builder = TreeBuilder.from_frontier(rule, lm.stop_ids, lm.decode, [dataclasses.replace(plan.start)],
                                        completed=record.completed_before,
                                        node_count=record.outside_nodes + 1, depth_limit=depth_limit,
                                        token_bytes=lm.token_bytes)
    expander = Expander(builder, ModelRunner(lm.model, top_k=top_k_for(rule)), prompt_ids,
                        paths={0: plan.path})
    run_trees([expander], max_batch, on_progress)
    record.start_node_id = _merge(nodes, plan.position, record.token_id is not None, builder.nodes)
    record.nodes_after = len(nodes)
    record.completed_after = sum(1 for n in nodes if n.finish_reason == "stop")
    metadata["growths"] = [*metadata.get("growths", []), record.to_json()]
    metadata["coverage"] = coverage(nodes).to_json()
    return record


def _check_model(lm: LoadedModel, metadata: dict[str, Any]) -> None:
    """A tree grows only with the model that built it: the same name, and (where the tree recorded one)
    the same fingerprint (another checkpoint, dtype or quantization would mix two models' numbers)."""
    built_by = metadata.get("model")
    if built_by is not None and built_by != lm.spec.name:
        raise GrowthRefused("model", f"the tree was built by {built_by!r}, not {lm.spec.name!r}; grow it "
                                     f"with --model {built_by}")
    fingerprint = metadata.get("model_fingerprint")
    if fingerprint is not None and fingerprint != lm.fingerprint:
        raise GrowthRefused("model", f"{lm.spec.name!r} as loaded here (dtype {lm.dtype}) is not the model "
                                     f"the tree was built with (fingerprint {fingerprint}, here "
                                     f"{lm.fingerprint}): load it with the tree's dtype "
                                     f"({metadata.get('dtype', 'unknown')})")


def _parent_positions(nodes: Sequence[Node]) -> list[int | None]:
    parents: list[int | None] = [None] * len(nodes)
    for index, node in enumerate(nodes):
        for child in node.children:
            parents[child] = index
    return parents


def _tokens_to(nodes: Sequence[Node], parents: Sequence[int | None], position: int) -> list[int]:
    """The tokens from the root's first child down to the node at `position` (the root has none)."""
    tokens: list[int] = []
    at: int | None = position
    while at is not None:
        if nodes[at].token_id is not None:
            tokens.append(nodes[at].token_id)  # type: ignore[arg-type]
        at = parents[at]
    return tokens[::-1]


def _merge(nodes: list[Node], position: int, new_child: bool, grown: Sequence[Node]) -> int:
    """Put the builder's nodes (`grown`, local ids, its start node 0 first) into `nodes`, with fresh ids;
    the start node's id in `nodes`."""
    next_id = max(n.id for n in nodes) + 1
    start = grown[0]
    if new_child:
        parent = nodes[position]
        local_positions = [len(nodes)]
        nodes.append(dataclasses.replace(start, id=next_id, parent_id=parent.id, children=[]))
        next_id += 1
        parent.children.append(local_positions[0])
        if parent.unexplored_mass is not None:
            parent.unexplored_mass = unexplored_mass([1.0 - parent.unexplored_mass, start.prob])
    else:
        node = nodes[position]
        local_positions = [position]
        for name in ("is_finished", "finish_reason", "threshold", "queue_depth", "entropy", "candidates",
                     "unexplored_mass"):
            setattr(node, name, getattr(start, name))
        node.candidates_json = None
    for local in grown[1:]:
        assert local.parent_id is not None  # only the start node has none here
        parent_position = local_positions[local.parent_id]
        local_positions.append(len(nodes))
        nodes.append(dataclasses.replace(local, id=next_id, parent_id=nodes[parent_position].id, children=[]))
        next_id += 1
        nodes[parent_position].children.append(local_positions[-1])
    return nodes[local_positions[0]].id
