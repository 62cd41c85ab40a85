"""Token trees in the CLI's JSON layout (the API serves the same): every node keyed by its token path, and
two trees compared. The worker tests (tests/workers) and the service benchmark (bench/service_speed.py)
check a distributed tree against the CLI's with them."""

from __future__ import annotations

import math
from typing import Any

from tokentree.models.node_writes import storable_text

Tree = dict[str, Any]

CLOSE = ("prob", "cumulative_prob", "entropy", "threshold", "raw_prob", "unexplored_mass")
EQUAL = ("text", "depth", "is_finished", "finish_reason", "queue_depth", "child_count", "bytes")


def by_path(tree: Tree) -> dict[tuple[int, ...], Tree]:
    """Every node keyed by its token path from the root."""
    nodes: dict[tuple[int, ...], Tree] = {}
    stack: list[tuple[tuple[int, ...], Tree]] = [((), tree["tree"])]
    while stack:
        path, node = stack.pop()
        assert path not in nodes, f"two nodes at {path}"
        nodes[path] = node
        stack.extend(((*path, child["token_id"]), child) for child in node["children"])
    return nodes


def assert_same_tree(got: Tree, want: Tree, tolerance: float = 1e-4) -> None:
    """The same token structure, the same rule inputs, children in the same order, probabilities and
    entropies within `tolerance`."""
    mine, theirs = by_path(got), by_path(want)
    missing, extra = sorted(set(theirs) - set(mine)), sorted(set(mine) - set(theirs))
    assert not missing and not extra, (
        f"{len(missing)} nodes missing (first {missing[:3]}), {len(extra)} extra (first {extra[:3]}) "
        f"of {len(theirs)}"
    )
    for path, want_node in theirs.items():
        node = mine[path]
        for name in CLOSE:
            a, b = node.get(name), want_node.get(name)
            assert (a is None) == (b is None), f"node at {path}: {name} {a} vs {b}"
            assert a is None or math.isclose(a, b, abs_tol=tolerance), f"node at {path}: {name} {a} vs {b}"
        for name in EQUAL:
            # A stored text is what Postgres can keep (`storable_text`: a NUL becomes U+FFFD).
            expected = storable_text(want_node[name]) if name == "text" else want_node.get(name)
            assert node.get(name) == expected, f"node at {path}: {name} {node.get(name)!r} vs {expected!r}"
        for part in ("children", "candidates"):
            tokens = [c["token_id"] for c in node[part]]
            assert tokens == [c["token_id"] for c in want_node[part]], f"node at {path}: {part} differ"
