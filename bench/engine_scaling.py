"""How the engine's cost grows: with the prompt's length, with the number of trees, with the tree.

1. Prompt length: the same kind of 3,000-node tree on a random Gemma-2 (width 256, 4 layers, context
   4096, the demo tokenizer) from prompts of about 10, 250, 500 and 1,000 tokens: time per node and the
   extra peak memory (resident set, measured in a fresh process per case).
2. Many trees: 10, 30 and the seed's 100 trees (10 prompts x 10 parameter sets, bench/workloads.py) on
   the demo model, one after another in one process against all at once (`build_trees`, as `--prompts`
   does); every tree is checked equal to the one built alone.
3. Tree size: demo-model trees of 1,000 to 10,000 nodes: peak KV slots and bytes, against the bound
   (prompt + 2 x slots on live paths) x KV bytes per token, and the extra peak memory.

    python bench/engine_scaling.py [--part 1 2 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.workloads import long_prompt, seed_workload
from tokentree.engine.analysis import TreeRequest, build_tree, build_trees
from tokentree.engine.loading import ModelSpec, encode_prompt, load_model
from tokentree.engine.params import TreeParams

WIDE = TreeParams(  # the engine bench's wide tree, lower thresholds: a random model is less sure
    min_branch_threshold=0.02,
    max_branch_threshold=0.1,
    soft_queue_limit=1000,
    max_completed_paths=100_000,
    max_depth=40,
    max_nodes=3000,
)


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set


def _prompt_case(model_dir: str, words: int, threads: int, repeats: int, queue) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(threads)
    lm = load_model(ModelSpec(name=model_dir))
    prompt = long_prompt(words) if words else "Once upon a time"
    build_tree(lm, "Once", TreeParams(max_nodes=2))  # warm-up
    _reset_peak()
    base = _rss_mb("VmRSS")
    times, nodes = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = build_tree(lm, prompt, WIDE)
        times.append(time.perf_counter() - started)
        nodes = len(result.nodes)
    queue.put((len(encode_prompt(lm, prompt)), nodes, statistics.median(times), _rss_mb("VmHWM") - base))


def part_prompt_length(threads: int, repeats: int) -> None:
    from bench.tiny_models import make_tiny_model

    folder = Path(tempfile.mkdtemp()) / "gemma2-256x4"
    make_tiny_model(folder, "gemma2", width=256, layers=4, context=4096)
    print("## 1. Prompt length (random Gemma-2 256x4, context 4096)\n")
    print("| prompt tokens | nodes | seconds | ms per node | vs shortest | extra peak MB |")
    print("|---|---|---|---|---|---|")
    context = multiprocessing.get_context("spawn")
    first = None
    for words in (0, 125, 250, 500):
        queue = context.Queue()
        process = context.Process(target=_prompt_case, args=(str(folder), words, threads, repeats, queue))
        process.start()
        tokens, nodes, seconds, extra = queue.get()
        process.join()
        per_node = seconds / nodes * 1000
        first = first or per_node
        print(f"| {tokens} | {nodes} | {seconds:.2f} | {per_node:.3f} | {per_node / first:.2f}x "
              f"| {extra:.0f} |")
    print()


def part_many_trees(threads: int) -> None:
    torch.set_num_threads(threads)
    lm = load_model(ModelSpec(name="demo"))
    build_tree(lm, "Once", TreeParams())  # warm-up
    print("## 2. The seed's trees (demo model): one after another against all at once\n")
    print("| trees | nodes | one after another s | all at once s | trees/s at once | speedup |")
    print("|---|---|---|---|---|---|")
    for count in (10, 30, 100):  # the first prompts of the workload, all ten parameter sets each
        work = seed_workload()[:count]
        started = time.perf_counter()
        alone = [build_tree(lm, prompt, params) for prompt, params in work]
        one_by_one = time.perf_counter() - started
        started = time.perf_counter()
        together = build_trees(lm, [TreeRequest(prompt, params) for prompt, params in work])
        at_once = time.perf_counter() - started
        for a, b in zip(alone, together, strict=True):
            assert [(n.token_id, n.parent_id, n.queue_depth) for n in a.nodes] == [
                (n.token_id, n.parent_id, n.queue_depth) for n in b.nodes
            ]
            assert max(abs(x.prob - y.prob) for x, y in zip(a.nodes, b.nodes, strict=True)) < 1e-4
        nodes = sum(len(r.nodes) for r in alone)
        print(f"| {count} | {nodes} | {one_by_one:.2f} | {at_once:.2f} | {count / at_once:.1f} | "
              f"{one_by_one / at_once:.1f}x |")
    print("\nevery tree built at once equals the tree built alone\n")


def _size_case(max_nodes: int, threads: int, queue) -> None:  # type: ignore[no-untyped-def]
    from tokentree.engine.analysis import tree_builder
    from tokentree.engine.expand import Expander, top_k_for
    from tokentree.engine.runner import ModelRunner

    torch.set_num_threads(threads)
    lm = load_model(ModelSpec(name="demo"))
    params = TreeParams(min_branch_threshold=0.05, max_branch_threshold=0.3, soft_queue_limit=100_000,
                        max_completed_paths=100_000, max_depth=60, max_nodes=max_nodes)
    prompt = "Once upon a time"
    ids = encode_prompt(lm, prompt)
    build_tree(lm, "Once", TreeParams(max_nodes=2))  # warm-up
    _reset_peak()
    base = _rss_mb("VmRSS")
    runner = ModelRunner(lm.model, top_k_for(params))
    tree = Expander(tree_builder(lm, prompt, ids, params), runner, ids)
    most_slots = most_bytes = 0
    while not tree.builder.done():
        tree.step()
        most_slots = max(most_slots, runner.pool.in_use)
        most_bytes = max(most_bytes, runner.memory_bytes())
    per_token = runner.pool.bytes() // runner.pool.capacity
    bound = (len(ids) + 2 * most_slots) * per_token
    queue.put((len(tree.builder.nodes), most_slots, most_bytes, bound, _rss_mb("VmHWM") - base))


def part_tree_size(threads: int) -> None:
    print("## 3. Tree size (demo model): KV memory against the bound\n")
    print("| nodes | most live slots | most KV bytes | bound (prompt + 2 x slots) | extra peak MB |")
    print("|---|---|---|---|---|")
    context = multiprocessing.get_context("spawn")
    for size in (1000, 3000, 10_000):
        queue = context.Queue()
        process = context.Process(target=_size_case, args=(size, threads, queue))
        process.start()
        nodes, slots, kv_bytes, bound, extra = queue.get()
        process.join()
        assert kv_bytes <= bound
        print(f"| {nodes} | {slots} | {kv_bytes / 1e6:.2f} MB | {bound / 1e6:.2f} MB | {extra:.0f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the issue's setting)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__} "
          f"({args.threads} thread), {platform.python_version()}\n")
    if 1 in args.part:
        part_prompt_length(args.threads, args.repeats)
    if 2 in args.part:
        part_many_trees(args.threads)
    if 3 in args.part:
        part_tree_size(args.threads)


if __name__ == "__main__":
    main()
