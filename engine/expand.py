"""The expansion loop: schedule -> execute -> update, until the tree is done.

`TreeBuilder` decides (pure logic), `ModelRunner` computes (torch); `Expander` only moves node ids and
KV-cache rows between them. A node whose parent's cache row is at hand costs one token of a batched
step; any other (the root, or a node a worker took over from another) is prefilled from its full prefix.
Cache rows are kept for two levels at most: the level being evaluated reads its parents' rows, and its
own rows wait for its children. Memory therefore follows the frontier, not the tree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from transformers import Cache

from engine.params import TreeParams
from engine.runner import CacheRow, ModelRunner
from engine.scheduler import MAX_CANDIDATES, Distribution, TreeBuilder
from engine.tree import Node

DEFAULT_MAX_BATCH = 256


@dataclass
class Progress:
    """What a progress bar shows after each batch."""

    nodes: int
    frontier: int
    completed_paths: int
    threshold: float | None
    depth: int


@dataclass
class ExpansionStats:
    forward_passes: int = 0
    levels: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StepResult:
    evaluated: list[int]  # nodes whose distributions were computed, in queue order
    created: list[int]  # the children the rule gave them


ProgressCallback = Callable[[Progress], None]


def top_k_for(params: TreeParams) -> int:
    """Enough tokens per distribution for both the candidate list and every possible child."""
    return max(MAX_CANDIDATES, params.most_children())


class Expander:
    """Drives one `TreeBuilder` with one `ModelRunner`, a batch per `step`."""

    def __init__(
        self,
        builder: TreeBuilder,
        runner: ModelRunner,
        prefixes: dict[int, list[int]],
    ) -> None:
        """`prefixes` gives the full input ids (prompt included) of the builder's starting nodes."""
        self.builder = builder
        self.runner = runner
        self._prefixes = prefixes
        self._rows: dict[int, CacheRow] = {}  # node id -> its cache row, for the last two levels
        self._row_depth: dict[int, list[int]] = {}  # depth -> node ids holding rows
        self.stats = ExpansionStats()
        self._last_depth = -1

    def prefix_of(self, node_id: int) -> list[int]:
        """A node's full input ids, from its nearest starting ancestor down."""
        tokens: list[int] = []
        node = self.builder.nodes[node_id]
        while node.id not in self._prefixes:
            tokens.append(node.token_id)  # type: ignore[arg-type]  # only the root lacks a token
            node = self.builder.nodes[node.parent_id]  # type: ignore[index]
        return self._prefixes[node.id] + tokens[::-1]

    def adopt(self, nodes: Sequence[Node], prefixes: Sequence[list[int]]) -> list[int]:
        """Take open nodes in from elsewhere, with their full input ids (prompt included): they are
        prefilled when their turn comes. Their ids in the builder."""
        ids = self.builder.adopt(nodes)
        self._prefixes.update(zip(ids, prefixes, strict=True))
        return ids

    def step(self, max_batch: int = DEFAULT_MAX_BATCH, external_queue_depth: int = 0) -> StepResult:
        """Evaluate the next batch the builder asks for, and let the builder apply the rule to it."""
        node_ids = self.builder.schedule(max_batch)
        distributions: dict[int, Distribution] = {}
        if node_ids:
            distributions = self._evaluate(node_ids)
        created = self.builder.update(distributions, external_queue_depth)
        return StepResult(evaluated=node_ids, created=created)

    def _evaluate(self, node_ids: list[int]) -> dict[int, Distribution]:
        nodes = self.builder.nodes
        depth = nodes[node_ids[0]].depth
        for old in [d for d in self._row_depth if d < depth - 1]:
            for node_id in self._row_depth.pop(old):
                self._rows.pop(node_id, None)
        stepped = [i for i in node_ids if nodes[i].parent_id in self._rows]
        prefilled = [i for i in node_ids if nodes[i].parent_id not in self._rows]
        results: dict[int, Distribution] = {}
        if stepped:
            parents = [self._rows[nodes[i].parent_id] for i in stepped]  # type: ignore[index]
            dists, cache = self.runner.step(parents, [nodes[i].token_id for i in stepped])  # type: ignore[misc]
            self._keep(depth, stepped, dists, cache, results)
        if prefilled:
            dists, cache = self.runner.prefill([self.prefix_of(i) for i in prefilled])
            self._keep(depth, prefilled, dists, cache, results)
        self.stats.batch_sizes.append(len(node_ids))
        if depth != self._last_depth:
            self.stats.levels += 1
            self._last_depth = depth
        return results

    def _keep(
        self,
        depth: int,
        node_ids: list[int],
        dists: list[Distribution],
        cache: Cache,
        results: dict[int, Distribution],
    ) -> None:
        for row, (node_id, dist) in enumerate(zip(node_ids, dists, strict=True)):
            self._rows[node_id] = CacheRow(cache=cache, row=row)
            results[node_id] = dist
        self._row_depth.setdefault(depth, []).extend(node_ids)

    def run(
        self, max_batch: int = DEFAULT_MAX_BATCH, on_progress: ProgressCallback | None = None
    ) -> ExpansionStats:
        """Step until the rule says stop."""
        started = time.perf_counter()
        passes_before = self.runner.forward_passes
        while not self.builder.done():
            result = self.step(max_batch)
            if on_progress is not None:
                last = self.builder.nodes[result.evaluated[-1]] if result.evaluated else None
                on_progress(
                    Progress(
                        nodes=self.builder.node_count,
                        frontier=len(self.builder.frontier),
                        completed_paths=self.builder.completed,
                        threshold=last.threshold if last else None,
                        depth=last.depth if last else 0,
                    )
                )
        self.stats.forward_passes += self.runner.forward_passes - passes_before
        self.stats.seconds += time.perf_counter() - started
        return self.stats


def expand(
    builder: TreeBuilder,
    runner: ModelRunner,
    prompt_ids: Sequence[int],
    max_batch: int = DEFAULT_MAX_BATCH,
    on_progress: ProgressCallback | None = None,
) -> ExpansionStats:
    """Grow a fresh builder's tree from its root (the prompt) until the rule says stop."""
    return Expander(builder, runner, {0: list(prompt_ids)}).run(max_batch, on_progress)
