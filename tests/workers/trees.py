"""Token trees for the worker tests: the CLI's reference tree, comparing trees in the CLI's JSON layout
(the API serves the same), and checking a stored tree against the rule with `engine.validate`."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from engine.params import TreeParams
from engine.tree import Candidate
from engine.validate import rule_violations
from models.node_reads import load_tree_nodes
from models.node_writes import storable_text
from tests.workers.conftest import REPO_ROOT, cli

Tree = dict[str, Any]

# Parameter sets for the demo model and "Once upon a time".
PROMPT = "Once upon a time"
# The default rule: a small tree, whole (about 200 nodes).
SMALL: dict[str, Any] = {"max_nodes": 400, "max_completed_paths": 20}
# A low threshold that the queue barely raises (bench/engine_speed.py's): wide trees, cut at max_nodes. Its
# queue stays near 300, within one worker's hold limit: one worker must build the CLI's tree.
WIDE: dict[str, Any] = {
    "min_branch_threshold": 0.05,
    "max_branch_threshold": 0.3,
    "soft_queue_limit": 1000,
    "max_depth": 40,
    "max_completed_paths": 1_000_000,
    "max_nodes": 3000,
}
# The same, deeper and uncapped: over 14,000 nodes, so it still runs when a test acts on it.
BIG: dict[str, Any] = {**WIDE, "max_depth": 60, "max_nodes": 100_000}
CLOSE = ("prob", "cumulative_prob", "entropy", "threshold")
EQUAL = ("text", "depth", "is_finished", "finish_reason", "queue_depth", "child_count")


def cli_tree(tmp: Path, model_source: str, prompt: str, **parameters: Any) -> Tree:
    """The reference: `tokentree tree PROMPT -o t.json` with the same parameters."""
    out = tmp / "cli-tree.json"
    args = ["tree", prompt, "--model", model_source, "-q", "-o", str(out)]
    for name, value in parameters.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    done = subprocess.run(cli(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


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
            a, b = node[name], want_node[name]
            assert (a is None) == (b is None), f"node at {path}: {name} {a} vs {b}"
            assert a is None or math.isclose(a, b, abs_tol=tolerance), f"node at {path}: {name} {a} vs {b}"
        for name in EQUAL:
            # A stored text is what Postgres can keep (`storable_text`: a NUL becomes U+FFFD).
            expected = storable_text(want_node[name]) if name == "text" else want_node[name]
            assert node[name] == expected, f"node at {path}: {name} {node[name]!r} vs {expected!r}"
        for part in ("children", "candidates"):
            tokens = [c["token_id"] for c in node[part]]
            assert tokens == [c["token_id"] for c in want_node[part]], f"node at {path}: {part} differ"


def assert_follows_rule(
    session: Session, job_id: str, params: TreeParams, stop_ids: set[int]
) -> dict[str, int]:
    """The stored tree obeys the rule for the queue depth each expansion recorded; counts by kind."""
    nodes = load_tree_nodes(session, job_id)
    for node in nodes:  # the rule needs the candidates themselves, read back as stored text
        node.candidates = [Candidate(c["token_id"], c["text"], c["prob"])
                           for c in json.loads(node.candidates_json or "[]")]
    problems = rule_violations(nodes, params, stop_ids)
    assert not problems, "\n".join(problems[:10])
    counts = {"nodes": len(nodes), "expanded": 0, "stop": 0, "max_depth": 0, "open": 0}
    for node in nodes:
        if node.is_expanded:
            counts["expanded"] += 1
        elif node.finish_reason is not None:
            counts[node.finish_reason] += 1
        else:
            counts["open"] += 1
    return counts
