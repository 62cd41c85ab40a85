"""The `Tree` type: a token tree built in this process or read from a service, with its paths, its JSON
document (byte for byte what `tokentree tree -o` writes), a pandas table of its nodes, and its inline
rendering in Jupyter.

Nodes are the engine's `Node`s in a flat list, parents before children; `Node.children` holds positions
in that list. A tree built here has ids equal to positions; a tree read from a document keeps the
document's ids (a service's database ids) and is laid out by them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tokentree.engine.tree import Candidate, CompletedPath, Node, node_json_head, response_text

if TYPE_CHECKING:
    import pandas

NODE_COLUMNS = ("id", "parent_id", "depth", "text", "token_id", "prob", "logprob", "cumulative_prob",
                "raw_prob", "raw_logprob", "is_finished", "finish_reason", "threshold", "queue_depth",
                "entropy", "unexplored_mass", "child_count", "candidates")


class Tree:
    """A token tree: `nodes` (the root, which stands for the prompt, first) and `metadata` (the prompt,
    parameters, model and stats, as the CLI records them)."""

    def __init__(self, nodes: list[Node], metadata: dict[str, Any], child_counts: list[int] | None = None):
        if not nodes:
            raise ValueError("a tree has at least its root")
        self.nodes = nodes
        self.metadata = metadata
        # A document cut at a depth says how many children its deepest nodes have without listing them;
        # kept so that `to_json` writes back what was read.
        self._child_counts = child_counts

    @classmethod
    def from_json(cls, document: str | bytes | Mapping[str, Any]) -> Tree:
        """A tree from the document `tokentree tree -o` writes and `GET /v1/jobs/{id}/tree` serves: its
        text, or that text parsed."""
        doc = json.loads(document) if isinstance(document, str | bytes) else document
        if not isinstance(doc, Mapping) or not isinstance(doc.get("tree"), Mapping):
            raise ValueError('not a token tree document: expected {"metadata": ..., "tree": {...}}')
        found: list[tuple[dict[str, Any], int | None]] = []  # (node object, its parent's id)
        stack: list[tuple[dict[str, Any], int | None]] = [(doc["tree"], None)]
        while stack:  # no recursion: trees may be thousands of levels deep
            item, parent_id = stack.pop()
            found.append((item, parent_id))
            stack.extend((child, item["id"]) for child in reversed(item.get("children", [])))
        found.sort(key=lambda pair: pair[0]["id"])  # ids grow from parents to children
        if found[0][1] is not None:
            raise ValueError("the root of a token tree must have the smallest id")
        position = {item["id"]: index for index, (item, _) in enumerate(found)}
        nodes = [_node(item, parent_id, position) for item, parent_id in found]
        counts = [int(item.get("child_count", len(item.get("children", [])))) for item, _ in found]
        return cls(nodes, dict(doc.get("metadata") or {}), counts)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    @property
    def prompt(self) -> str:
        return str(self.metadata.get("prompt", self.root.text))

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        model = self.metadata.get("model", "?")
        completed = sum(1 for node in self.nodes if node.finish_reason == "stop")
        return f"<Tree {self.prompt!r}: {len(self.nodes)} nodes, {completed} completed paths, model {model}>"

    def child_count(self, position: int) -> int:
        """How many children the node at `position` has (in a cut document, more than it lists)."""
        if self._child_counts is None:
            return len(self.nodes[position].children)
        return self._child_counts[position]

    def paths(self, limit: int | None = None) -> list[CompletedPath]:
        """The paths that reached a stop token, most probable first (ties: the smaller node id first), at
        most `limit`; each with its text (its response: the forced prefix, then its tokens; the prompt
        left out), its tokens and its probability (`cumulative_prob`, the product of its tokens'
        probabilities)."""
        ends = sorted((position for position, node in enumerate(self.nodes) if node.finish_reason == "stop"),
                      key=lambda p: (-self.nodes[p].cumulative_prob, self.nodes[p].id))
        parents = self._parent_positions()
        found = []
        for position in ends[:limit]:
            node = self.nodes[position]
            chain = []
            at: int | None = position
            while at is not None and at != 0:
                chain.append(self.nodes[at])
                at = parents[at]
            chain.reverse()
            found.append(CompletedPath(node_id=node.id,
                                       token_ids=[n.token_id for n in chain if n.token_id is not None],
                                       text=response_text(self.metadata.get("prefix"),
                                                          (n.text for n in chain)),
                                       cumulative_prob=node.cumulative_prob))
        return found

    def to_json(self) -> str:
        """The document `tokentree tree -o` writes, as text: the same keys, order and numbers."""
        return '{"metadata": ' + json.dumps(self.metadata) + ', "tree": ' + "".join(self._node_json()) + "}"

    def to_dict(self) -> dict[str, Any]:
        """The document parsed: `{"metadata": {...}, "tree": {...nested nodes...}}`."""
        parsed: dict[str, Any] = json.loads(self.to_json())
        return parsed

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per node, indexed by node id: its token, probabilities, what the rule saw at it, and
        its candidates (a list of `{"text", "prob", "token_id", "logprob", "raw_prob", "raw_logprob"}`).
        Needs pandas."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Tree.to_dataframe needs pandas, an optional dependency of tokentree: "
                              "pip install 'tokentree[pandas]' (or pip install pandas)") from None
        parent_ids = [None if p is None else self.nodes[p].id for p in self._parent_positions()]
        rows = [(node.id, parent_ids[index], node.depth, node.text, node.token_id, node.prob, node.logprob,
                 node.cumulative_prob, node.prob if node.raw_prob is None else node.raw_prob,
                 node.logprob if node.raw_logprob is None else node.raw_logprob, node.is_finished,
                 node.finish_reason, node.threshold, node.queue_depth, node.entropy, node.unexplored_mass,
                 self.child_count(index), [c.to_json() for c in node.candidates])
                for index, node in enumerate(self.nodes)]
        frame = pandas.DataFrame.from_records(rows, columns=list(NODE_COLUMNS))
        # Columns that are None somewhere keep their integer type (a plain int column would turn to float).
        for name in ("parent_id", "token_id", "queue_depth"):
            frame[name] = frame[name].astype("Int64")
        return frame.set_index("id")

    def _repr_html_(self) -> str:
        from tokentree.render import tree_html

        return tree_html(self)

    def _parent_positions(self) -> list[int | None]:
        parents: list[int | None] = [None] * len(self.nodes)
        for position, node in enumerate(self.nodes):
            for child in node.children:
                parents[child] = position
        return parents

    def _node_json(self) -> Iterator[str]:
        # The engine's writer, walking positions; each node's own child count (see `child_count`).
        stack: list[int | str] = [0]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                yield item
                continue
            node = self.nodes[item]
            yield node_json_head(node, self.child_count(item))
            stack.append("]}")
            for index in range(len(node.children) - 1, -1, -1):
                stack.append(node.children[index])
                if index > 0:
                    stack.append(", ")


def _node(item: Mapping[str, Any], parent_id: int | None, position: dict[int, int]) -> Node:
    return Node(
        id=item["id"], parent_id=parent_id, token_id=item.get("token_id"), text=item["text"],
        depth=item["depth"], prob=item["prob"], logprob=item["logprob"],
        cumulative_prob=item["cumulative_prob"], raw_prob=item.get("raw_prob"),
        raw_logprob=item.get("raw_logprob"), token_bytes=_bytes(item),
        is_finished=item.get("is_finished", False), finish_reason=item.get("finish_reason"),
        candidates=[Candidate(token_id=c["token_id"], text=c["text"], prob=c["prob"],
                              logprob=c.get("logprob"), raw_prob=c.get("raw_prob"),
                              raw_logprob=c.get("raw_logprob"), token_bytes=_bytes(c))
                    for c in item.get("candidates", [])],
        threshold=item.get("threshold"), queue_depth=item.get("queue_depth"), entropy=item.get("entropy"),
        unexplored_mass=item.get("unexplored_mass"),
        children=[position[child["id"]] for child in item.get("children", [])],
    )


def _bytes(item: Mapping[str, Any]) -> bytes | None:
    """A token's `bytes` (a list of ints in the document), where it has them."""
    listed = item.get("bytes")
    return None if listed is None else bytes(listed)
