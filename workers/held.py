"""A unit of work's share of a job's frontier: the engine's `TreeBuilder` and `Expander` over the open
nodes the unit holds, with the map between the engine's local node ids and the database's ids.

The engine grows a tree from a frontier given up front (`TreeBuilder.from_frontier`). A worker also
takes more nodes in later (from the shared queue) and gives some back (to an idle peer), so this class
adds those two moves. Nodes taken in are prefilled from their full prefix; the children a unit creates
are stepped from their parent's KV-cache row, which is why a unit keeps the children it produced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from engine.expand import Expander
from engine.loading import LoadedModel
from engine.params import TreeParams
from engine.runner import ModelRunner
from engine.scheduler import TreeBuilder
from engine.tree import Node, candidates_json
from models.node_writes import Expansion, Finish, NewChild, OpenNode, Pop


class _AdoptingExpander(Expander):
    """An `Expander` that can be told the prefix of a node joining the frontier later."""

    def adopt(self, node_id: int, prefix: list[int]) -> None:
        self._prefixes[node_id] = prefix


@dataclass(frozen=True)
class Step:
    """One batch's effect on the held frontier, in local ids."""

    popped: list[int]  # in pop order
    created: list[int]
    frontier_after: int  # how many nodes the unit held right after the step


class HeldTree:
    """The open nodes one unit holds, and the engine state to expand them."""

    def __init__(self, lm: LoadedModel, params: TreeParams, prompt_ids: list[int], depth_limit: int | None,
                 runner: ModelRunner) -> None:
        self.lm = lm
        self.params = params
        self.prompt_ids = prompt_ids
        self.depth_limit = depth_limit
        self.runner = runner
        self.builder: TreeBuilder | None = None
        self._expander: _AdoptingExpander | None = None
        self.db_ids: list[int | None] = []  # local id -> database id; None until the node is written

    # -- what is held ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return 0 if self.builder is None else len(self.builder.frontier)

    def held_db_ids(self) -> list[int]:
        """The database ids of the open nodes held, in queue order (every one is written already)."""
        if self.builder is None:
            return []
        return [self._db(local) for local in self.builder.frontier]

    def _db(self, local: int) -> int:
        db_id = self.db_ids[local]
        assert db_id is not None, f"local node {local} has no database id yet"
        return db_id

    # -- taking nodes in and giving them back -----------------------------------------------------------

    def adopt(
        self, nodes: Sequence[OpenNode], paths: dict[int, list[int]], completed: int, node_count: int
    ) -> None:
        """Take open nodes in, after those held already; the queue stays in depth order."""
        if not nodes:
            return
        if self.builder is None:
            start = [self._engine_node(i, n) for i, n in enumerate(nodes)]
            self.builder = TreeBuilder.from_frontier(self.params, self.lm.stop_ids, self.lm.decode, start,
                                                     completed=completed, node_count=node_count,
                                                     depth_limit=self.depth_limit)
            prefixes = {i: self.prompt_ids + paths[n.id] for i, n in enumerate(nodes)}
            self._expander = _AdoptingExpander(self.builder, self.runner, prefixes)
        else:
            assert self._expander is not None
            for n in nodes:
                local = len(self.builder.nodes)
                self.builder.nodes.append(self._engine_node(local, n))
                self.builder.frontier.append(local)
                self._expander.adopt(local, self.prompt_ids + paths[n.id])
            self.builder.sync(completed, node_count)
        self.db_ids.extend(n.id for n in nodes)
        self._keep_depth_order()

    @staticmethod
    def _engine_node(local: int, n: OpenNode) -> Node:
        # No parent here: a node taken in is prefilled from its prefix, never stepped from a parent's cache.
        return Node(id=local, parent_id=None, token_id=n.token_id, text=n.text, depth=n.depth, prob=n.prob,
                    logprob=n.logprob, cumulative_prob=n.cumulative_prob)

    def _keep_depth_order(self) -> None:
        """FIFO from one root is level order; nodes taken in from the shared queue may be shallower than
        the children held, so restore depth order (stably) or the batches fragment by depth."""
        assert self.builder is not None
        nodes = self.builder.nodes
        frontier = self.builder.frontier
        depths = [nodes[i].depth for i in frontier]
        if any(a > b for a, b in pairwise(depths)):
            self.builder.frontier = deque(sorted(frontier, key=lambda i: nodes[i].depth))

    def give_back(self, count: int) -> list[int]:
        """Remove the last `count` held nodes (the deepest, newest); their database ids, in queue order."""
        assert self.builder is not None
        out = [self.builder.frontier.pop() for _ in range(min(count, len(self.builder.frontier)))]
        return [self._db(local) for local in reversed(out)]

    def drop(self, locals_: set[int]) -> None:
        """Forget held nodes that turned out not to be this unit's (not written, or held elsewhere)."""
        if self.builder is not None and locals_:
            self.builder.frontier = deque(i for i in self.builder.frontier if i not in locals_)

    # -- expanding -------------------------------------------------------------------------------------

    def done(self) -> bool:
        return self.builder is None or self.builder.done()

    def sync(self, completed: int, node_count: int) -> None:
        if self.builder is not None:
            self.builder.sync(completed, node_count)

    def counts(self) -> tuple[int, int]:
        assert self.builder is not None
        return self.builder.completed, self.builder.node_count

    def step(self, max_batch: int, external_queue_depth: int) -> Step:
        """Evaluate one batch and apply the rule to it (`external_queue_depth`: open nodes held elsewhere)."""
        assert self.builder is not None and self._expander is not None
        before = list(self.builder.frontier)
        result = self._expander.step(max_batch, max(0, external_queue_depth))
        after = len(self.builder.frontier)
        # The builder pops from the head and appends children at the tail; a child that needs no model
        # (a stop token) can be popped in the same step it was created in.
        popped = (before + result.created)[: len(before) + len(result.created) - after]
        self.db_ids.extend([None] * (len(self.builder.nodes) - len(self.db_ids)))
        return Step(popped=popped, created=result.created, frontier_after=after)

    def pops(self, step: Step) -> list[Pop]:
        """The step's pops as writes (every popped node has its database id by now)."""
        assert self.builder is not None
        nodes = self.builder.nodes
        out: list[Pop] = []
        for local in step.popped:
            node = nodes[local]
            if node.is_finished:
                reason = node.finish_reason or "max_depth"
                if self.db_ids[local] is None:  # created in this very step: named by parent and token
                    assert node.parent_id is not None and node.token_id is not None
                    out.append(Finish(node_id=None, reason=reason, parent_id=self._db(node.parent_id),
                                      token_id=node.token_id))
                else:
                    out.append(Finish(node_id=self._db(local), reason=reason))
                continue
            children = [nodes[c] for c in node.children]
            out.append(Expansion(
                node_id=self._db(local), depth=node.depth, candidates_json=candidates_json(node.candidates),
                threshold=node.threshold if node.threshold is not None else 0.0,
                queue_depth=node.queue_depth if node.queue_depth is not None else 0, entropy=node.entropy,
                children=[NewChild(token_id=c.token_id, text=c.text, prob=c.prob, logprob=c.logprob,
                                   cumulative_prob=c.cumulative_prob)
                          for c in children if c.token_id is not None],
            ))
        return out

    def written(self, step: Step, child_ids: list[list[int]]) -> set[int]:
        """Record the children's database ids (per pop, as `write_step` returned them); the local ids of
        children that were not written (a limit cut them, or the node was done elsewhere)."""
        assert self.builder is not None
        nodes = self.builder.nodes
        unwritten: set[int] = set()
        for local, ids in zip(step.popped, child_ids, strict=True):
            if nodes[local].is_finished:
                continue
            kids = nodes[local].children
            for kid, db_id in zip(kids, ids, strict=False):
                self.db_ids[kid] = db_id
            unwritten.update(kids[len(ids):])
        return unwritten

    def local_ids(self, db_ids: set[int]) -> set[int]:
        """Local ids of held nodes with these database ids."""
        if self.builder is None:
            return set()
        return {i for i in self.builder.frontier if self.db_ids[i] in db_ids}
