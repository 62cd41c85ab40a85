"""The branching rule as a pure state machine: which nodes need a distribution next, and what to do
with the distributions once they come back. No torch here: tests drive it with hand-made numbers.

The rule (the seed's, made exact): a FIFO queue starts with the root. Before each pop the threshold is
`branch_threshold(|Q|)`, |Q| being the queue length before the pop. A popped node at `depth >= max_depth`
is finished; one whose token is a stop token is finished and completes a path. Any other node records
its candidates (probability > candidate_threshold, best `max_candidates`) and gets a child for every
token with probability > T, best first, or the single most likely token when none is. The loop ends
when the queue is empty, `max_completed_paths` paths are completed, or the tree holds `max_nodes` nodes.
"Probability" is the sampler's (engine/sampling.py): the distribution left after temperature and the
filters, which is the model's own with default settings; each token also records the model's own
(`raw_prob`). An expanded node records the probability its children leave out (`unexplored_mass`).

Why this can be batched without changing the tree: FIFO order from one root visits the tree level by
level, and a node's distribution depends only on its prefix, never on the threshold. So `schedule`
hands out the next run of same-depth nodes that the sequential loop is certain to expand, the caller
evaluates them in one batch, and `update` replays the sequential pops over the results.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

from tokentree.engine.params import TreeParams, branch_threshold
from tokentree.engine.tree import Candidate, Node, unexplored_mass

TokenBytes = Callable[[int], bytes | None]


def no_bytes(token_id: int) -> None:
    """For callers without a tokenizer (hand-made distributions): no token's bytes are known."""
    return None


class RankedToken(NamedTuple):
    token_id: int
    prob: float  # after the sampler
    logprob: float
    raw_prob: float  # the model's own
    raw_logprob: float


@dataclass(frozen=True)
class Distribution:
    """A node's next-token distribution after the sampler, cut to its most likely tokens, with the
    model's own probabilities of the same tokens (`raw_*`: the processed ones when left out, as with
    default settings, where they are equal). `entropy` is the processed distribution's: the one the
    rule branches on."""

    token_ids: list[int]
    probs: list[float]
    logprobs: list[float]
    entropy: float
    raw_probs: list[float] | None = None
    raw_logprobs: list[float] | None = None

    def ranked(self) -> list[RankedToken]:
        """Best first; equal probabilities in token-id order, so ties are stable."""
        raw_probs = self.probs if self.raw_probs is None else self.raw_probs
        raw_logprobs = self.logprobs if self.raw_logprobs is None else self.raw_logprobs
        tokens = zip(self.token_ids, self.probs, self.logprobs, raw_probs, raw_logprobs, strict=True)
        return sorted((RankedToken(*t) for t in tokens), key=lambda t: (-t.prob, t.token_id))


class TreeBuilder:
    """Grows one token tree by the rule above, a batch of same-depth nodes at a time."""

    def __init__(
        self,
        params: TreeParams,
        stop_ids: Collection[int],
        root_text: str,
        decode: Callable[[int], str],
        depth_limit: int | None = None,
        token_bytes: TokenBytes = no_bytes,
    ) -> None:
        """`decode` gives a token's text; `token_bytes` its bytes where that text is not valid UTF-8
        on its own (`LoadedModel.token_bytes`)."""
        root = Node(
            id=0,
            parent_id=None,
            token_id=None,
            text=root_text,
            depth=0,
            prob=1.0,
            logprob=0.0,
            cumulative_prob=1.0,
        )
        self._start(params, stop_ids, decode, token_bytes, depth_limit, [root], completed=0, node_count=1)

    @classmethod
    def from_frontier(
        cls,
        params: TreeParams,
        stop_ids: Collection[int],
        decode: Callable[[int], str],
        frontier: list[Node],
        completed: int,
        node_count: int,
        depth_limit: int | None = None,
        token_bytes: TokenBytes = no_bytes,
    ) -> TreeBuilder:
        """Continue a tree from open nodes held elsewhere (a worker's leased share of a job's frontier).

        `frontier` must be in queue order with ids 0..n-1 (callers map them to their own ids);
        `completed` and `node_count` are the whole tree's counts so far.
        """
        builder = cls.__new__(cls)
        builder._start(params, stop_ids, decode, token_bytes, depth_limit, frontier, completed, node_count)
        return builder

    def _start(
        self,
        params: TreeParams,
        stop_ids: Collection[int],
        decode: Callable[[int], str],
        token_bytes: TokenBytes,
        depth_limit: int | None,
        frontier: list[Node],
        completed: int,
        node_count: int,
    ) -> None:
        if [n.id for n in frontier] != list(range(len(frontier))):
            raise ValueError("frontier nodes must have ids 0..n-1 in queue order")
        self.params = params
        self.stop_ids = frozenset(stop_ids)
        self.decode = decode
        self.token_bytes = token_bytes
        # The model's context may end before max_depth does; past it there is nothing to evaluate.
        self.depth_limit = params.max_depth if depth_limit is None else min(params.max_depth, depth_limit)
        self.nodes: list[Node] = list(frontier)
        self.frontier: deque[int] = deque(n.id for n in frontier)
        self.completed = completed
        self.node_count = node_count  # the whole tree's, which may be more than `nodes` holds here
        self.expanded = 0

    def sync(self, completed: int, node_count: int) -> None:
        """Take in counts that grew elsewhere (other workers' completed paths and nodes)."""
        self.completed = max(self.completed, completed)
        self.node_count = max(self.node_count, node_count)

    # -- moving open nodes in and out (a worker's share of a job's frontier changes) ----------------

    def adopt(self, nodes: Sequence[Node]) -> list[int]:
        """Put open nodes held elsewhere on the frontier, after those held; the ids given to them.

        The frontier stays in depth order (stably): FIFO from one root is level order, and nodes taken
        in may be shallower than children held here; out of order, batches would fragment by depth.
        """
        ids = list(range(len(self.nodes), len(self.nodes) + len(nodes)))
        for node_id, node in zip(ids, nodes, strict=True):
            node.id = node_id
            self.nodes.append(node)
            self.frontier.append(node_id)
        depths = [self.nodes[i].depth for i in self.frontier]
        if any(a > b for a, b in pairwise(depths)):
            self.frontier = deque(sorted(self.frontier, key=lambda i: self.nodes[i].depth))
        return ids

    def release(self, count: int) -> list[int]:
        """Take the last `count` open nodes (the deepest, newest) off the frontier; their ids, in queue
        order. They are someone else's to expand now."""
        out = [self.frontier.pop() for _ in range(min(count, len(self.frontier)))]
        return out[::-1]

    def drop(self, node_ids: Collection[int]) -> None:
        """Take these nodes off the frontier, wherever they are in it."""
        if node_ids:
            self.frontier = deque(i for i in self.frontier if i not in node_ids)

    # -- state ---------------------------------------------------------------------------------------

    def done(self) -> bool:
        return (
            not self.frontier
            or self.completed >= self.params.max_completed_paths
            or self.node_count >= self.params.max_nodes
        )

    def needs_distribution(self, node: Node) -> bool:
        """Whether popping this node expands it (as opposed to finishing it)."""
        return node.depth < self.depth_limit and node.token_id not in self.stop_ids

    # -- schedule --------------------------------------------------------------------------------------

    def schedule(self, max_batch: int) -> list[int]:
        """The next nodes, in queue order, whose distributions the sequential loop will certainly use.

        Walks the queue from its head within one depth, simulating the pops that need no model
        (stop tokens count toward max_completed_paths). Every expansion adds at least one node, so no
        more than `max_nodes - len(nodes)` further expansions can happen: nothing past that is asked for.
        """
        budget = min(max_batch, self.params.max_nodes - self.node_count)
        if self.done() or budget <= 0:
            return []
        depth = self.nodes[self.frontier[0]].depth
        completed = self.completed
        wanted: list[int] = []
        for node_id in self.frontier:
            node = self.nodes[node_id]
            if node.depth != depth or len(wanted) >= budget:
                break
            if self.needs_distribution(node):
                wanted.append(node_id)
            elif node.depth < self.depth_limit:  # a stop token: one more completed path
                completed += 1
                if completed >= self.params.max_completed_paths:
                    break
        return wanted

    # -- update ----------------------------------------------------------------------------------------

    def update(self, distributions: Mapping[int, Distribution], external_queue_depth: int = 0) -> list[int]:
        """Replay the sequential pops, using `distributions` for the nodes that expand.

        Stops at the first node that needs a distribution it was not given. `external_queue_depth`
        counts open paths held elsewhere (other workers) for the threshold. Returns the new nodes' ids.
        """
        created: list[int] = []
        while not self.done():
            node = self.nodes[self.frontier[0]]
            expands = self.needs_distribution(node)
            if expands and node.id not in distributions:
                break
            queue_depth = len(self.frontier) + external_queue_depth
            self.frontier.popleft()
            if not expands:
                self._finish(node)
                continue
            created.extend(self._expand(node, distributions[node.id], queue_depth))
        return created

    def _finish(self, node: Node) -> None:
        node.is_finished = True
        if node.depth >= self.depth_limit:
            node.finish_reason = "max_depth"
        else:
            node.finish_reason = "stop"
            self.completed += 1

    def _expand(self, node: Node, dist: Distribution, queue_depth: int) -> list[int]:
        threshold = branch_threshold(queue_depth, self.params)
        ranked = dist.ranked()
        node.threshold = threshold
        node.queue_depth = queue_depth
        node.entropy = dist.entropy
        node.candidates = [
            Candidate(token_id=r.token_id, text=self.decode(r.token_id), prob=r.prob, logprob=r.logprob,
                      raw_prob=r.raw_prob, raw_logprob=r.raw_logprob,
                      token_bytes=self.token_bytes(r.token_id))
            for r in ranked[: self.params.max_candidates]
            if r.prob > self.params.candidate_threshold
        ]
        chosen = [r for r in ranked if r.prob > threshold] or ranked[:1]
        chosen = chosen[: self.params.max_nodes - self.node_count]
        node.unexplored_mass = unexplored_mass([r.prob for r in chosen])
        self.expanded += 1
        created = []
        for r in chosen:
            child = Node(
                id=len(self.nodes),
                parent_id=node.id,
                token_id=r.token_id,
                text=self.decode(r.token_id),
                depth=node.depth + 1,
                prob=r.prob,
                logprob=r.logprob,
                cumulative_prob=node.cumulative_prob * r.prob,
                raw_prob=r.raw_prob,
                raw_logprob=r.raw_logprob,
                token_bytes=self.token_bytes(r.token_id),
            )
            self.nodes.append(child)
            self.node_count += 1
            node.children.append(child.id)
            self.frontier.append(child.id)
            created.append(child.id)
        return created
