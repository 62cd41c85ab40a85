"""What comparing two trees costs as the trees grow: two equal synthetic trees (every node shared, every
expanded node's distributions compared: the most work a pair of that size can ask) of 10,000, 40,000 and
160,000 nodes, lined up by `engine.compare.compare_trees` and reported (top 100 disagreements).

The walk visits each shared node once and matches children through a dict, so time per node should stay
flat as the trees grow (the ranking's sort adds a log factor).

    python bench/compare_costs.py
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.factories import synthetic_tree
from tokentree.engine.compare import compare_trees

SIZES = (10_000, 40_000, 160_000)
REPEATS = 5


def main() -> None:
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, median of {REPEATS}\n")
    print("| nodes per tree | shared | compared nodes | seconds | µs per node | vs smallest |")
    print("|---|---|---|---|---|---|")
    warm = synthetic_tree(1_000, seed=2)
    compare_trees(warm, {"prompt": warm[0].text}, warm, {"prompt": warm[0].text}).to_json(top=100)
    first = None
    for size in SIZES:
        a, b = synthetic_tree(size, seed=1), synthetic_tree(size, seed=1)
        metadata = {"prompt": a[0].text, "parameters": {}}
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            comparison = compare_trees(a, metadata, b, metadata)
            comparison.to_json(top=100)
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        per_node = seconds / size * 1e6
        first = first or per_node
        print(f"| {size:,} | {comparison.shared_nodes:,} | {len(comparison.disagreements):,} | {seconds:.3f} "
              f"| {per_node:.1f} | {per_node / first:.2f}x |")


if __name__ == "__main__":
    main()
