"""`tokentree compare A.json B.json`: line up two trees of the same prompt (engine/compare.py) and print what
they share, where their most probable paths part and where their next-token distributions differ most;
`-o` writes the whole report as JSON.

A file that is not a tree document, or two trees of different prompts, is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tokentree.cli.common import Parser
from tokentree.cli.errors import UsageError

if TYPE_CHECKING:
    from tokentree.engine.compare import Disagreement, TreeComparison
    from tokentree.engine.tree import Candidate, Node
    from tokentree.tree import Tree

# Candidates printed per side for each disagreement.
SHOWN_CANDIDATES = 4


def add_command(commands: argparse._SubParsersAction[Parser]) -> None:
    compare = commands.add_parser("compare",
                                  help="compare two trees of the same prompt (files from `tree -o`)")
    compare.add_argument("a", type=Path, metavar="A.json", help="a tree document (`tokentree tree -o`)")
    compare.add_argument("b", type=Path, metavar="B.json", help="another tree of the same prompt text")
    compare.add_argument("-o", "--output", type=Path, help="write the whole comparison here as JSON")
    compare.add_argument("--top", type=int, default=5, metavar="N", help="disagreements to print")
    compare.set_defaults(handler=run_compare)


def read_tree(path: Path) -> Tree:
    """A tree document from a file, or a one-line error naming the file."""
    from tokentree.tree import Tree

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return Tree.from_json(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        reason = f"a node lacks {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UsageError(f"{path} is not a token tree document as `tokentree tree -o` writes: "
                         f"{reason}") from None


def run_compare(args: argparse.Namespace) -> int:
    from tokentree.engine.compare import NotComparable, compare_trees

    if args.top < 0:
        raise UsageError(f"--top must be at least 0, got {args.top}")
    tree_a, tree_b = read_tree(args.a), read_tree(args.b)
    try:
        comparison = compare_trees(tree_a.nodes, tree_a.metadata, tree_b.nodes, tree_b.metadata)
    except NotComparable as exc:
        raise UsageError(str(exc)) from None
    print(summary(comparison, args.top, args.a.name, args.b.name))
    if args.output is not None:
        args.output.write_text(json.dumps(comparison.to_json()) + "\n", encoding="utf-8")
        print(f"comparison written to {args.output}")
    return 0


def summary(comparison: TreeComparison, top: int, name_a: str, name_b: str) -> str:
    """The comparison as text: counts, settings that differ, the parting point, the top disagreements."""
    lines = [f"A {name_a}: {comparison.a_nodes} nodes   B {name_b}: {comparison.b_nodes} nodes",
             f"shared {comparison.shared_nodes}   only in A {comparison.only_a}   "
             f"only in B {comparison.only_b}"]
    for setting, (value_a, value_b) in comparison.differences.items():
        lines.append(f"differs: {setting}  A {json.dumps(value_a)}  B {json.dumps(value_b)}")
    lines.extend(f"note: {note}" for note in comparison.notes)
    parting = comparison.parting
    if parting is None:
        lines.append("most probable paths: the same in both trees")
    else:
        where = _token(parting.path.text) if parting.path.text else "the prompt"
        lines.append(f"most probable paths part after {where} (depth {parting.depth}): "
                     f"{_step('A', parting.a_next)}, {_step('B', parting.b_next)}")
    shown = comparison.disagreements[:top]
    if shown:
        lines.append(f"largest disagreements (total variation distance of the next-token distributions, "
                     f"{len(comparison.disagreements)} nodes both expanded):")
        lines.extend(_disagreement(rank, comparison, item) for rank, item in enumerate(shown, 1))
    return "\n".join(lines)


def _step(side: str, node: Node | None) -> str:
    return f"{side} has no node after it" if node is None else f"{side} {_token(node.text)} p={node.prob:.4f}"


def _disagreement(rank: int, comparison: TreeComparison, item: Disagreement) -> str:
    path = comparison.path(item).text
    return (f"  {rank}. TV={item.distance:.3f}  after {_token(path) if path else 'the prompt'}\n"
            f"       A: {_distribution(item.a_candidates)}\n"
            f"       B: {_distribution(item.b_candidates)}")


def _distribution(candidates: list[Candidate]) -> str:
    ranked = sorted(candidates, key=lambda c: -c.prob)
    text = "  ".join(f"{_token(c.text)} {c.prob:.3f}" for c in ranked[:SHOWN_CANDIDATES])
    more = len(ranked) - SHOWN_CANDIDATES
    return (text or "(no candidates recorded)") + (f"  (+{more} more)" if more > 0 else "")


def _token(text: str, limit: int = 60) -> str:
    """A token or path, quoted with its whitespace visible; long paths keep their end."""
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(shown) <= limit else '"…' + shown[-(limit - 2):]
