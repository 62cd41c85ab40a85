"""A unit of work's share of a job's frontier: the engine's `TreeBuilder` and `Expander` over the open
nodes the unit holds, with the map between the engine's local node ids and the database's ids.

A unit takes open nodes in (from the shared queue: `Expander.adopt`) and gives some back (to an idle
peer: `TreeBuilder.release`). Nodes taken in are evaluated from their path below the (shared) prompt;
the children a unit creates are stepped from their parent's KV handle, which is why a unit keeps the
children it produced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tokentree.engine.expand import Expander, StepResult
from tokentree.engine.loading import LoadedModel
from tokentree.engine.params import TreeParams
from tokentree.engine.runner import ModelRunner
from tokentree.engine.scheduler import TreeBuilder
from tokentree.engine.tree import Node, candidates_json
from tokentree.models.node_writes import Expansion, Finish, NewChild, OpenNode, Pop

Stepper = Callable[[Expander, int, int], StepResult]  # (tree, max_batch, external queue depth)


@dataclass(frozen=True)
class Step:
    """One batch's effect on the held frontier, in local ids."""

    popped: list[int]  # in pop order
    created: list[int]
    frontier_after: int  # how many nodes the unit held right after the step


class HeldTree:
    """The open nodes one unit holds, and the engine state to expand them."""

    def __init__(self, lm: LoadedModel, params: TreeParams, prompt_ids: list[int], depth_limit: int | None,
                 runner: ModelRunner, stepper: Stepper | None = None) -> None:
        """`stepper` runs one step of the tree: alone (`Expander.step`) or with the worker's other units'
        trees (`StepBatcher.step`)."""
        self.stepper = stepper or Expander.step
        self.builder = TreeBuilder.from_frontier(params, lm.stop_ids, lm.decode, [], completed=0,
                                                 node_count=0, depth_limit=depth_limit,
                                                 token_bytes=lm.token_bytes)
        self._expander = Expander(self.builder, runner, prompt_ids, paths={})
        self.db_ids: list[int | None] = []  # local id -> database id; None until the node is written

    # -- what is held ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.builder.frontier)

    def held_db_ids(self) -> list[int]:
        """The database ids of the open nodes held, in queue order (those written: a step computed but
        never written leaves children without one)."""
        return [i for i in (self.db_ids[local] for local in self.builder.frontier) if i is not None]

    def _db(self, local: int) -> int:
        db_id = self.db_ids[local]
        assert db_id is not None, f"local node {local} has no database id yet"
        return db_id

    # -- taking nodes in and giving them back -----------------------------------------------------------

    def adopt(
        self, nodes: Sequence[OpenNode], paths: dict[int, list[int]], completed: int, node_count: int
    ) -> None:
        """Take open nodes in, after those held already (the frontier stays in depth order)."""
        if not nodes:
            return
        # No parent here: a node taken in is evaluated from its path, never stepped from a parent's KV
        # handle. Its id is the builder's to give.
        self._expander.adopt([Node(id=-1, parent_id=None, token_id=n.token_id, text=n.text, depth=n.depth,
                                   prob=n.prob, logprob=n.logprob, cumulative_prob=n.cumulative_prob)
                              for n in nodes], [paths[n.id] for n in nodes])
        self.builder.sync(completed, node_count)
        self.db_ids.extend(n.id for n in nodes)

    def give_back(self, count: int) -> list[int]:
        """Remove the last `count` held nodes (the deepest, newest); their database ids, in queue order."""
        return [self._db(local) for local in self.builder.release(count)]

    def drop(self, locals_: set[int]) -> None:
        """Forget held nodes that turned out not to be this unit's (not written, or held elsewhere)."""
        self.builder.drop(locals_)

    # -- expanding -------------------------------------------------------------------------------------

    def done(self) -> bool:
        return self.builder.done()

    def add_others(self, completed: int, node_count: int) -> None:
        """Count other units' completed paths and nodes toward the job's limits."""
        self.builder.sync(self.builder.completed + completed, self.builder.node_count + node_count)

    def next_batch(self, max_batch: int) -> list[int | None]:
        """The database ids of the nodes the next step may run the model on (the head of the queue, as
        `step` schedules it); None for children of a step not written yet."""
        return [self.db_ids[local] for local in self.builder.schedule(max_batch)]

    def step(self, max_batch: int, external_queue_depth: int) -> Step:
        """Evaluate one batch and apply the rule to it (`external_queue_depth`: open nodes held elsewhere)."""
        before = list(self.builder.frontier)
        result = self.stepper(self._expander, max_batch, max(0, external_queue_depth))
        after = len(self.builder.frontier)
        # The builder pops from the head and appends children at the tail; a child that needs no model
        # (a stop token) can be popped in the same step it was created in.
        popped = (before + result.created)[: len(before) + len(result.created) - after]
        self.db_ids.extend([None] * (len(self.builder.nodes) - len(self.db_ids)))
        return Step(popped=popped, created=result.created, frontier_after=after)

    def pops(self, step: Step) -> list[Pop]:
        """The step's pops as writes (every popped node has its database id by now)."""
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
                unexplored_mass=node.unexplored_mass,
                children=[NewChild(token_id=c.token_id, text=c.text, prob=c.prob, logprob=c.logprob,
                                   cumulative_prob=c.cumulative_prob, raw_prob=c.raw_prob,
                                   raw_logprob=c.raw_logprob, token_bytes=c.token_bytes)
                          for c in children if c.token_id is not None],
            ))
        return out

    def written(self, step: Step, child_ids: list[list[int]]) -> set[int]:
        """Record the children's database ids (per pop, as `write_step` returned them); the local ids of
        children that were not written (a limit cut them, or the node was done elsewhere)."""
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
        return {i for i in self.builder.frontier if self.db_ids[i] in db_ids}
