"""The commands that run a model: `tree`, `logprobs`, and `demo-model` (where the bundled one lives).

torch and transformers are imported only once a command runs (they take seconds), so parsing and
`--help` stay fast.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tokentree.cli import grow_cmd
from tokentree.cli.common import Parser
from tokentree.cli.errors import UsageError
from tokentree.engine.params import (
    LOGPROBS_PARAMETERS,
    SAMPLER_PARAMETERS,
    TREE_PARAMETERS,
    Bounds,
    LogprobsParams,
    ParameterError,
    TreeParams,
    check_prompt,
)
from tokentree.engine.tree import Node, path_to, response_text

if TYPE_CHECKING:
    from tokentree.engine.analysis import TreeResult
    from tokentree.engine.loading import LoadedModel


def _probability(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="demo",
        help="'demo' (bundled), a local folder, or a Hugging Face Hub id",
    )
    group.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                       help="weight precision; auto: bf16 (else fp16) on a GPU, fp32 on the CPU")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="where the model runs; auto: CUDA when a GPU is available")
    group.add_argument(
        "--quantize",
        choices=["none", "4bit", "8bit"],
        default="none",
        help="load weights quantized with bitsandbytes (needs CUDA)",
    )
    group.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    group.add_argument("--prefix", default=None, help="force the response to start with this text")
    group.add_argument(
        "--stop-token",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="an extra token id that ends a path (repeatable)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_parameter_flags(group: argparse._ArgumentGroup, defaults: object, table: dict[str, Bounds]) -> None:
    """One flag per parameter of `table` (dashes for underscores), its help the table's meaning."""
    for name, bounds in table.items():
        default = getattr(defaults, name)
        count = isinstance(default, int)
        metavar = "N" if count else "P" if (bounds.low, bounds.high) == (0.0, 1.0) else "X"
        group.add_argument("--" + name.replace("_", "-"), type=int if count else _probability,
                           default=default, metavar=metavar, help=bounds.meaning)


def add_tree_parameters(parser: argparse.ArgumentParser) -> None:
    rule = {name: bounds for name, bounds in TREE_PARAMETERS.items() if name not in SAMPLER_PARAMETERS}
    _add_parameter_flags(parser.add_argument_group("branching rule"), TreeParams(), rule)
    _add_parameter_flags(parser.add_argument_group("sampler (the rule branches on what it leaves)"),
                         TreeParams(), SAMPLER_PARAMETERS)
    parser.add_argument("--max-batch", type=int, default=256, metavar="N",
                        help="most nodes evaluated in one forward pass")


def add_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register `tree`, `logprobs` and `demo-model` on the CLI's subcommands."""
    tree = commands.add_parser("tree", help="expand a token tree from a prompt (or many: --prompts)")
    tree.add_argument("prompt", nargs="?", help="the text the tree grows from (or give --prompts)")
    tree.add_argument("-o", "--output", type=Path,
                      help="write the tree JSON (the seed's layout) here; with --prompts, one tree a line")
    tree.add_argument("--prompts", type=Path, metavar="FILE.jsonl",
                      help="build many trees in shared batches: one JSON object a line, {\"prompt\": ..., "
                           "\"parameters\": {...}, \"chat\": bool, \"prefix\": str}; flags are the defaults")
    tree.add_argument("--top", type=int, default=10, metavar="N", help="completed paths to print")
    add_model_options(tree)
    add_tree_parameters(tree)
    grow_cmd.add_flags(tree)
    tree.set_defaults(handler=run_tree)

    logprobs = commands.add_parser("logprobs", help="greedy generation with per-token log-probabilities")
    logprobs.add_argument("prompt", help="the text the model continues")
    logprobs.add_argument("-o", "--output", type=Path, help="append the JSONL record to this file")
    defaults = LogprobsParams()
    logprobs.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, metavar="N",
                          help="tokens to generate at most")
    logprobs.add_argument("--top-k", type=int, default=defaults.top_k, metavar="K",
                          help="most probable tokens listed at each step")
    _add_parameter_flags(logprobs.add_argument_group("sampler (the greedy choice is made on what it leaves)"),
                         defaults, SAMPLER_PARAMETERS)
    add_model_options(logprobs)
    logprobs.set_defaults(handler=run_logprobs)

    demo = commands.add_parser("demo-model", help="print the folder of the bundled demo checkpoint")
    demo.set_defaults(handler=run_demo_model)


def _load(args: argparse.Namespace) -> LoadedModel:
    from transformers.utils import logging as transformers_logging

    from tokentree.engine.loading import ModelSpec, load_model

    # stderr carries our progress bar and errors only, not the library's loading bars and notices.
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()

    lm = load_model(
        ModelSpec(name=args.model, dtype=args.dtype, device=args.device, quantization=args.quantize)
    )
    return lm.with_stop_ids(args.stop_token) if args.stop_token else lm


# The metadata key of a tree whose expansion was interrupted: its open nodes are left as they were.
UNFINISHED = "unfinished"


def run_tree(args: argparse.Namespace) -> int:
    # The flags are checked before torch and transformers are imported: a mistake is told at once, not
    # after seconds of imports.
    params = TreeParams(**{name: getattr(args, name) for name in TreeParams.__dataclass_fields__})
    if args.max_batch < 1:
        raise ParameterError("max_batch", f"must be at least 1, got {args.max_batch}")
    if args.from_tree is not None:
        return grow_cmd.run_grow(args, _load)
    if (args.prompt is None) == (args.prompts is None):
        raise UsageError("give a prompt or --prompts FILE.jsonl (one of them)")
    if args.prompts is not None and args.output is None:
        raise UsageError("--prompts needs -o OUT.jsonl for the trees")
    if args.prompt is not None:
        check_prompt(args.prompt)

    from tokentree.cli.interrupt import INTERRUPTED, StopRequest
    from tokentree.cli.progress import TreeProgressBar
    from tokentree.engine.analysis import TreeRequest, build_trees

    flags = TreeRequest(args.prompt or "", params, chat=args.chat, prefix=args.prefix)
    if args.prompts is not None:
        from tokentree.cli.prompts_file import read_requests

        requests = read_requests(args.prompts, flags)
    else:
        requests = [flags]
    lm = _load(args)
    # From here to the end of the writing, SIGINT and SIGTERM stop the expansion at its next batch: the
    # trees so far are written whole (marked unfinished), never cut off mid-update or mid-write.
    with StopRequest() as stop:
        with TreeProgressBar(disable=args.quiet, trees=len(requests)) as bar:
            results = build_trees(lm, requests, max_batch=args.max_batch, on_progress=bar.update,
                                  should_stop=stop)
        stop.writing()
        for result in results:
            if not result.finished:
                result.metadata[UNFINISHED] = True
        if args.prompts is not None:
            _write_trees(args, results)
        else:
            _write_tree(args, results[0])
    if stop():
        print(f"tokentree: interrupted ({stop.name}): {_kept(args, results)}", file=sys.stderr)
        return INTERRUPTED
    return 0


def _kept(args: argparse.Namespace, results: list[TreeResult]) -> str:
    """What an interrupted `tree` kept, for its one line on stderr."""
    unfinished = sum(1 for r in results if not r.finished)
    nodes = sum(r.metadata["stats"]["nodes"] for r in results)
    marked = f'marked "{UNFINISHED}": true in the metadata'
    if args.prompts is not None:
        return f"{len(results)} trees ({unfinished} unfinished, {marked}) written to {args.output}"
    if not unfinished:
        return "the tree was already complete" + (f", written to {args.output}" if args.output else "")
    if args.output is None:
        return f"the tree stopped at {nodes} nodes (no -o: not saved)"
    return f"the unfinished tree ({nodes} nodes, {marked}) written to {args.output}"


def _write_trees(args: argparse.Namespace, results: list[TreeResult]) -> None:
    """`--prompts`: the trees to -o, one a line, and their totals."""
    with args.output.open("w", encoding="utf-8") as out:
        for result in results:
            out.write(result.json_text() + "\n")
    nodes = sum(r.metadata["stats"]["nodes"] for r in results)
    completed = sum(r.metadata["stats"]["completed_paths"] for r in results)
    seconds = max(r.metadata["stats"]["seconds"] for r in results)
    print(f"trees {len(results)}  nodes {nodes}  completed paths {completed}  time {seconds:.2f}s")
    print(f"trees written to {args.output}, one a line, in input order")


def _write_tree(args: argparse.Namespace, result: TreeResult) -> None:
    """One tree: to -o if given, and its summary with its most probable paths."""
    if args.output is not None:
        args.output.write_text(result.json_text(), encoding="utf-8")
    stats = result.metadata["stats"]
    print(
        f"nodes {stats['nodes']}  expanded {stats['expanded']}  levels {stats['levels']}  "
        f"forward passes {stats['forward_passes']}  completed paths {stats['completed_paths']}  "
        f"time {stats['seconds']:.2f}s"
    )
    mass = result.metadata["coverage"]
    print(f"probability mass: completed paths {mass['completed_mass']:.4f}, "
          f"all leaves {mass['leaf_mass']:.4f} (unexplored: {max(0.0, 1.0 - mass['leaf_mass']):.4f})")
    # A path is printed as its whole text: the prompt, then its response (`response_text`: the forced prefix,
    # then its tokens). In chat mode the prompt went through the chat template, so it is shown once and
    # each path as the response alone.
    prefix = result.metadata["prefix"]
    if result.metadata["chat"]:
        print(f"chat prompt: {args.prompt}")
        lead, what = "", "responses"
    else:
        lead, what = args.prompt, "paths"
    paths = result.completed_paths[: args.top]
    if paths:
        print(f"completed {what}, most probable first ({len(result.completed_paths)} in all):")
        for rank, path in enumerate(paths, 1):
            print(f"{rank:3d}. p={path.cumulative_prob:.6f}  {lead}{path.text}")
    else:
        if result.finished:
            print("no path reached a stop token (raise --max-depth or --max-nodes to let paths finish)")
        else:
            print("no path reached a stop token before the expansion was interrupted")
        leaves = _unfinished_leaves(result.nodes)
        if leaves:
            print(f"unfinished {what} (no stop token yet), most probable first ({len(leaves)} in all):")
            best = heapq.nsmallest(args.top, leaves, key=lambda n: -n.cumulative_prob)  # stable: ties by id
            for rank, leaf in enumerate(best, 1):
                text = response_text(prefix, (n.text for n in path_to(result.nodes, leaf.id)))
                print(f"{rank:3d}. p={leaf.cumulative_prob:.6f}  {lead}{text}")
    if args.output is not None:
        print(f"tree written to {args.output}")


def _unfinished_leaves(nodes: list[Node]) -> list[Node]:
    """The ends of the paths that reached no stop token: open nodes and those cut at max_depth."""
    return [n for n in nodes if not n.children and n.parent_id is not None and n.finish_reason != "stop"]


def run_logprobs(args: argparse.Namespace) -> int:
    params = LogprobsParams(**{name: getattr(args, name) for name in LOGPROBS_PARAMETERS})
    check_prompt(args.prompt)  # before the seconds of importing torch, as in `run_tree`

    from tokentree.engine.analysis import analyze_logprobs
    from tokentree.engine.sampling import SamplerSettings

    lm = _load(args)
    record = analyze_logprobs(lm, args.prompt, params, chat=args.chat, prefix=args.prefix)
    sampled = not SamplerSettings.of(params).is_identity
    for step in record["data"]:
        rivals = "  ".join(f"{o['token']!r} {o['prob']:.1f}%" for o in step["other_tokens"][1:])
        # With a sampler, the model's own probability too: the two differ.
        raw = f" (model {step['raw_prob']:6.2f}%)" if sampled else ""
        print(f"{step['token']!r:>20} {step['prob']:6.2f}%{raw}  {step['logprob']:8.4f}   {rivals}")
    print(f"response: {record['response']}")
    if args.output is not None:
        with args.output.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        print(f"record appended to {args.output}")
    return 0


def run_demo_model(args: argparse.Namespace) -> int:
    from tokentree.engine import DEMO_MODEL_DIR

    print(DEMO_MODEL_DIR)
    return 0
