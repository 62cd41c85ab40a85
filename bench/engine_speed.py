"""The engine against the seed's strategy on the same trees: same tree, how much faster.

The seed expands one node at a time: a forward pass of one token on a deep copy of the parent's KV
cache. The engine evaluates a tree level per batched forward pass, reusing cache rows. Both build the
tree of each prompt; the script checks the trees are equal, then prints a markdown table of medians.

    python bench/engine_speed.py [--repeats 3] [--model demo]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.reference import assert_matches_reference, sequential_tree
from tokentree.engine.analysis import build_tree
from tokentree.engine.loading import ModelSpec, encode_prompt, load_model
from tokentree.engine.params import TreeParams

# Wide trees of 2,000+ nodes on the demo model: a low threshold that the queue barely raises, capped at
# 3,000 nodes so the seed's strategy finishes in about a minute a tree.
BIG = TreeParams(
    min_branch_threshold=0.05,
    max_branch_threshold=0.3,
    soft_queue_limit=1000,
    max_completed_paths=100_000,
    max_depth=40,
    max_nodes=3000,
)
PROMPTS = ["Once upon a time", "Once upon a time there", "Once"]  # the demo model grows big trees from these


def median_time(fn, repeats: int):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed-repeats", type=int, default=1, help="repeats of the (slow) seed strategy")
    parser.add_argument("--prompt", action="append", help="prompts (default: three generic ones)")
    args = parser.parse_args()

    lm = load_model(ModelSpec(name=args.model))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), model {args.model} ({lm.dtype}, {lm.model.device})"
    )
    print(f"parameters: {BIG.to_dict()}\n")
    print(
        "| prompt | nodes | levels | seed forwards | engine forwards | seed s | engine s | seed nodes/s "
        "| engine nodes/s | speedup | same tree |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    speedups = []
    for prompt in args.prompt or PROMPTS:
        prompt_ids = encode_prompt(lm, prompt)
        build_tree(lm, prompt, BIG)  # warm-up: the allocator settles on the first run of new shapes
        engine_s, result = median_time(lambda p=prompt: build_tree(lm, p, BIG), args.repeats)
        seed_s, reference = median_time(
            lambda ids=prompt_ids: sequential_tree(
                lm.model, ids, set(lm.stop_ids), BIG.to_dict(), use_cache=True
            ),
            args.seed_repeats,
        )
        assert_matches_reference(result.nodes, reference.root)
        nodes = len(result.nodes)
        speedup = seed_s / engine_s
        speedups.append(speedup)
        print(
            f"| {prompt} | {nodes} | {result.stats.levels} | {reference.forward_passes} | "
            f"{result.stats.forward_passes} | {seed_s:.2f} | {engine_s:.3f} | {nodes / seed_s:.0f} | "
            f"{nodes / engine_s:.0f} | {speedup:.1f}x | yes |"
        )
    print(f"\nmedian speedup {statistics.median(speedups):.1f}x over {len(speedups)} trees")


if __name__ == "__main__":
    main()
