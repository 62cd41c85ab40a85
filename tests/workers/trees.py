"""Token trees for the worker tests: the parameter sets they build, the CLI's reference tree, and checking
a stored tree against the rule with `engine.validate`. (Comparing two trees in the CLI's JSON layout, which
the API serves too: bench/trees.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tests.utils.cli import run_cli
from tokentree.engine.params import TreeParams
from tokentree.engine.tree import Candidate
from tokentree.engine.validate import rule_violations
from tokentree.models.node_reads import load_tree_nodes

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
# WIDE through a sampler (each worker row gets its tree's settings), recording more candidates.
SAMPLED: dict[str, Any] = {**WIDE, "temperature": 0.8, "top_p": 0.95, "min_p": 0.02, "max_candidates": 15}


def cli_tree(tmp: Path, model_source: str, prompt: str, **parameters: Any) -> dict[str, Any]:
    """The reference: `tokentree tree PROMPT -o t.json` with the same parameters."""
    out = tmp / "cli-tree.json"
    args = ["tree", prompt, "--model", model_source, "-q", "-o", str(out)]
    for name, value in parameters.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    done = run_cli(*args, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def assert_same_coverage(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Two trees' metadata record the same probability mass, within the 1e-4 probabilities are equal to
    (a worker's batches are not the CLI's, and the database sums in its own order)."""
    for name in ("completed_mass", "leaf_mass"):
        assert abs(got["coverage"][name] - want["coverage"][name]) < 1e-4, (name, got["coverage"],
                                                                              want["coverage"])


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
