"""The expansion loop: schedule -> execute -> update, for one tree or for many at once.

`TreeBuilder` decides (pure logic), `ModelRunner` computes (torch). An `Expander` moves one tree's node
ids and KV handles between them; `step_trees` gives the scheduled nodes of many trees one forward pass
together, within one batch limit. Each tree keeps its own queue, counts and threshold, and a tree's
distributions depend only on its own prefixes and its own sampler settings (each row of a step carries
its tree's), so batching never changes a tree.

KV memory (engine/kv.py): a tree holds its prompt once (shared with every other tree of the same prompt)
and the `NodeKV` handles of the nodes evaluated in its last two levels: the level being evaluated
extends its parents' handles, and its own handles wait for its children. A handle keeps its ancestors'
slots alive and nothing else, so memory follows the paths of the frontier, not the prompt times the
frontier. A node whose parent's handle is not at hand (one taken over from another worker) is evaluated
from its whole path below the prompt, still on the shared prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tokentree.engine.kv import NodeKV, PromptKV
from tokentree.engine.params import TreeParams
from tokentree.engine.runner import ModelRunner, Row
from tokentree.engine.sampling import SamplerSettings
from tokentree.engine.scheduler import Distribution, TreeBuilder
from tokentree.engine.tree import Node

DEFAULT_MAX_BATCH = 256


@dataclass
class BatchProgress:
    """What a progress bar shows after each batch."""

    nodes: int
    frontier: int
    completed_paths: int
    threshold: float | None
    depth: int
    trees_done: int = 0  # of the trees stepped together


@dataclass
class ExpansionStats:
    forward_passes: int = 0  # forward passes this tree took part in (shared ones count for each tree)
    levels: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)  # this tree's nodes in each of its batches


@dataclass(frozen=True)
class StepResult:
    evaluated: list[int]  # nodes whose distributions were computed, in queue order
    created: list[int]  # the children the rule gave them


BatchProgressCallback = Callable[[BatchProgress], None]


def top_k_for(params: TreeParams) -> int:
    """Enough tokens per distribution for both the candidate list and every possible child."""
    return max(params.max_candidates, params.most_children())


class Expander:
    """One tree's side of the loop: which rows its scheduled nodes need, and the KV handles it keeps."""

    def __init__(self, builder: TreeBuilder, runner: ModelRunner, prompt_ids: Sequence[int],
                 paths: dict[int, list[int]] | None = None) -> None:
        """`prompt_ids`: the root's input ids. `paths`: the tokens below the prompt of starting nodes
        other than a fresh root (the node's own token last); a fresh builder's root needs none."""
        self.builder = builder
        self.runner = runner
        self.prompt_ids = list(prompt_ids)
        self.top_k = top_k_for(builder.params)
        self.sampler = SamplerSettings.of(builder.params)
        self.external_queue_depth = 0  # open paths of this tree held elsewhere (other workers)
        self.stats = ExpansionStats()
        self._paths: dict[int, list[int]] = {0: []} if paths is None else dict(paths)
        self._prompt: PromptKV | None = None
        self._kv: dict[int, NodeKV] = {}  # node id -> its KV handle, for the last two levels
        self._kv_depth: dict[int, list[int]] = {}  # depth -> node ids holding handles
        self._last_depth = -1

    @property
    def prompt(self) -> PromptKV:
        if self._prompt is None:
            passes = self.runner.forward_passes
            self._prompt = self.runner.prompt(self.prompt_ids)
            self.stats.forward_passes += self.runner.forward_passes - passes
        return self._prompt

    def forget_kv(self) -> None:
        """Drop every handle: the next nodes are evaluated from their whole paths (as after a takeover)."""
        self._kv.clear()
        self._kv_depth.clear()

    def path_of(self, node_id: int) -> list[int]:
        """A node's tokens below the prompt, from its nearest starting ancestor down."""
        tokens: list[int] = []
        node = self.builder.nodes[node_id]
        while node.id not in self._paths:
            tokens.append(node.token_id)  # type: ignore[arg-type]  # only the root lacks a token
            node = self.builder.nodes[node.parent_id]  # type: ignore[index]
        return self._paths[node.id] + tokens[::-1]

    def adopt(self, nodes: Sequence[Node], paths: Sequence[list[int]]) -> list[int]:
        """Take open nodes in from elsewhere, with their tokens below the prompt: they are evaluated from
        those paths when their turn comes. Their ids in the builder."""
        ids = self.builder.adopt(nodes)
        self._paths.update(zip(ids, (list(p) for p in paths), strict=True))
        return ids

    def row(self, node_id: int) -> Row | None:
        """What evaluating this node takes: a row of a step, or None when it is the prompt's own
        distribution (a root)."""
        node = self.builder.nodes[node_id]
        parent = self._kv.get(node.parent_id) if node.parent_id is not None else None
        if parent is not None:
            return Row(self.prompt, parent, [node.token_id], self.sampler)  # type: ignore[list-item]
        path = self.path_of(node_id)
        return Row(self.prompt, None, path, self.sampler) if path else None

    def keep(self, node_id: int, kv: NodeKV) -> None:
        depth = self.builder.nodes[node_id].depth
        self._kv[node_id] = kv
        self._kv_depth.setdefault(depth, []).append(node_id)

    def begin_level(self, depth: int, batch_size: int) -> None:
        """Before a batch at `depth`: drop handles older than the parents' level; count the batch."""
        for old in [d for d in self._kv_depth if d < depth - 1]:
            for node_id in self._kv_depth.pop(old):
                self._kv.pop(node_id, None)
        self.stats.batch_sizes.append(batch_size)
        if depth != self._last_depth:
            self.stats.levels += 1
            self._last_depth = depth

    def step(self, max_batch: int = DEFAULT_MAX_BATCH, external_queue_depth: int = 0) -> StepResult:
        """Evaluate the next batch this tree asks for, alone, and apply the rule to it."""
        self.external_queue_depth = external_queue_depth
        result = step_trees([self], max(1, max_batch))[0]
        assert result is not None  # alone, a tree always has the whole batch
        return result

    def run(self, max_batch: int = DEFAULT_MAX_BATCH, on_progress: BatchProgressCallback | None = None
            ) -> ExpansionStats:
        """Step until the rule says stop."""
        run_trees([self], max_batch, on_progress)
        return self.stats


def step_trees(trees: Sequence[Expander], max_batch: int = DEFAULT_MAX_BATCH) -> list[StepResult | None]:
    """One step of many trees: each schedules within what is left of `max_batch` (in the order given),
    all their rows run in one forward pass, and each applies the rule to its own distributions. A tree
    reached once the batch is full is not stepped (None): it goes first next time."""
    budget = max_batch
    scheduled: list[list[int]] = []
    stepped: list[bool] = []  # reached before the batch filled (a tree may take part with pops alone)
    for tree in trees:
        stepped.append(budget > 0)
        node_ids = tree.builder.schedule(budget) if budget > 0 else []
        budget -= len(node_ids)
        scheduled.append(node_ids)
    distributions: list[dict[int, Distribution]] = [{} for _ in trees]
    rows: list[Row] = []
    owners: list[tuple[int, int]] = []  # (tree index, node id) of each row
    runner: ModelRunner | None = None
    for index, (tree, node_ids) in enumerate(zip(trees, scheduled, strict=True)):
        if not node_ids:
            continue
        tree.begin_level(tree.builder.nodes[node_ids[0]].depth, len(node_ids))
        for node_id in node_ids:
            row = tree.row(node_id)
            if row is None:
                root = tree.runner.distribution(tree.prompt, tree.top_k, tree.sampler)
                distributions[index][node_id] = root
            else:
                rows.append(row)
                owners.append((index, node_id))
                if runner is not None and tree.runner is not runner:
                    raise ValueError("trees stepped together must share one ModelRunner")
                runner = tree.runner
    if runner is not None:
        top_k = max(trees[index].top_k for index, _ in owners)
        dists, kvs = runner.step(rows, top_k)
        for index in {index for index, _ in owners}:
            trees[index].stats.forward_passes += 1
        for (index, node_id), dist, kv in zip(owners, dists, kvs, strict=True):
            distributions[index][node_id] = dist
            trees[index].keep(node_id, kv)
    return [
        StepResult(evaluated=node_ids, created=tree.builder.update(dists, tree.external_queue_depth))
        if took_part else None
        for tree, node_ids, dists, took_part in zip(trees, scheduled, distributions, stepped, strict=True)
    ]


def run_trees(trees: Sequence[Expander], max_batch: int = DEFAULT_MAX_BATCH,
              on_progress: BatchProgressCallback | None = None,
              should_stop: Callable[[], bool] | None = None) -> None:
    """Step many trees together until each one's rule says stop; finished trees leave the batch (and
    free their KV). `on_progress` sees the totals over all trees.

    `should_stop` is asked before every batch: once it says yes, the loop ends there, every tree as its
    last batch left it (its open nodes still on its frontier, `builder.done()` false), so a caller can
    keep the partial trees (the CLI on Ctrl-C)."""
    started = time.perf_counter()
    active = [t for t in trees if not t.builder.done()]
    while active:
        if should_stop is not None and should_stop():
            for tree in active:
                tree.forget_kv()
                tree.stats.seconds = time.perf_counter() - started
            return
        results = step_trees(active, max_batch)
        if on_progress is not None:
            last = None
            for tree, result in zip(active, results, strict=True):
                if result is not None and result.evaluated:
                    last = tree.builder.nodes[result.evaluated[-1]]
            on_progress(BatchProgress(
                nodes=sum(t.builder.node_count for t in trees),
                frontier=sum(len(t.builder.frontier) for t in trees),
                completed_paths=sum(t.builder.completed for t in trees),
                threshold=last.threshold if last else None,
                depth=last.depth if last else 0,
                trees_done=sum(1 for t in trees if t.builder.done()),
            ))
        still: list[Expander] = []
        waiting: list[Expander] = []
        for tree, result in zip(active, results, strict=True):
            if tree.builder.done():
                tree.forget_kv()
                tree.stats.seconds = time.perf_counter() - started
            else:
                (still if result is not None else waiting).append(tree)
        active = waiting + still  # trees the full batch left out go first


def expand(
    builder: TreeBuilder,
    runner: ModelRunner,
    prompt_ids: Sequence[int],
    max_batch: int = DEFAULT_MAX_BATCH,
    on_progress: BatchProgressCallback | None = None,
) -> ExpansionStats:
    """Grow a fresh builder's tree from its root (the prompt) until the rule says stop."""
    return Expander(builder, runner, prompt_ids).run(max_batch, on_progress)
