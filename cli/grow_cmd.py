"""`tokentree tree --from tree.json --node ID [--token ID]`: grow a tree file in place (engine/grow.py).

The node's recorded candidate `--token` becomes a child and grows by the rule (without `--token`, the
leaf `--node` itself grows further); the output is the whole tree with the new branch, the growth recorded
in its metadata (`growths`). The rule's flags given on the command line override the tree's own
parameters for this growth; its limits count from where it starts. The model is the file's unless
`--model` says otherwise, and must be the one that built the tree.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tokentree.cli.compare_cmd import read_tree
from tokentree.cli.errors import UsageError
from tokentree.engine.params import TreeParams

if TYPE_CHECKING:
    from tokentree.engine.loading import LoadedModel

# The model flag's default: --from then takes the file's model.
DEFAULT_MODEL = "demo"


def add_flags(tree: argparse.ArgumentParser) -> None:
    """`tree`'s flags for growing a file."""
    group = tree.add_argument_group("grow a tree file in place")
    group.add_argument("--from", dest="from_tree", type=Path, metavar="TREE.json",
                       help="grow this tree document (`tree -o`, or a job's tree) instead of a new one")
    group.add_argument("--node", type=int, metavar="ID", help="with --from: the node to grow at (its id)")
    group.add_argument("--token", type=int, metavar="ID",
                       help="with --from: the node's recorded candidate to grow as a new child; without "
                            "it, the leaf --node itself grows further")


def growth_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The rule's flags that differ from their defaults: what this growth changes of the tree's own."""
    defaults = TreeParams()
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TreeParams)
            if getattr(args, f.name) != getattr(defaults, f.name)}


def run_grow(args: argparse.Namespace, load: Callable[[argparse.Namespace], LoadedModel]) -> int:
    """Grow `--from`'s tree and write it to -o (without -o only the summary is printed)."""
    if args.prompt is not None or args.prompts is not None:
        raise UsageError("--from grows a tree file: give no prompt and no --prompts")
    if args.node is None:
        raise UsageError("--from needs --node ID (and --token ID for one of its candidates)")
    tree = read_tree(args.from_tree)
    params = TreeParams.from_dict({**dict(tree.metadata.get("parameters") or {}), **growth_overrides(args)})
    if args.model == DEFAULT_MODEL and isinstance(tree.metadata.get("model"), str):
        args.model = tree.metadata["model"]

    from tokentree.cli.progress import TreeProgressBar
    from tokentree.engine.grow import grow_tree, plan_growth
    from tokentree.engine.growth import GrowthRefused
    from tokentree.tree import Tree

    old_count = len(tree.nodes)
    try:
        plan = plan_growth(tree.nodes, tree.metadata, args.node, args.token, params)
        lm = load(args)
        with TreeProgressBar(disable=args.quiet) as bar:
            record = grow_tree(lm, tree.nodes, tree.metadata, plan, max_batch=args.max_batch,
                               on_progress=bar.update)
    except GrowthRefused as exc:
        flag = {"node_id": "--node", "token_id": "--token"}.get(exc.field, "--model")
        raise UsageError(f"{flag}: {exc.message}") from None
    counts = [tree.child_count(i) if i < old_count else 0 for i in range(len(tree.nodes))]
    grown = Tree(tree.nodes, tree.metadata,
                 [max(count, len(node.children)) for count, node in zip(counts, tree.nodes, strict=True)])
    if args.output is not None:
        args.output.write_text(grown.to_json(), encoding="utf-8")
    start = next(n for n in grown.nodes if n.id == record.start_node_id)
    what = (f"candidate {args.token} ({start.text!r}, p={start.prob:.6f} from its {record.prob_source})"
            if args.token is not None else "the leaf itself")
    print(f"grew node {args.node}: {what}; {(record.nodes_after or 0) - record.nodes_before} new nodes, "
          f"the tree {record.nodes_before} -> {record.nodes_after} nodes, completed paths "
          f"{record.completed_before} -> {record.completed_after}")
    new_paths = [p for p in grown.paths() if p.node_id > record.last_node_before][: args.top]
    lead = "" if grown.metadata.get("chat") else grown.prompt
    for rank, found in enumerate(new_paths, 1):
        print(f"{rank:3d}. p={found.cumulative_prob:.6f}  {lead}{found.text}")
    print(f"tree written to {args.output}" if args.output is not None
          else "no -o: the grown tree is not saved")
    return 0

