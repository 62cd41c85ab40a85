"""A unit of tree work: take open nodes from the job's frontier, expand them with the engine's batched
stepping for a while, write every step, give back what is left, and say whether the job needs more.

One unit, step by step:

1. start the job (`models.node_writes.start_tree`: running, and its root if it has none, in one
   transaction). A fresh job's root is held by this unit at once; otherwise lease up to `hold_limit`
   nodes from the shared queue (the frontier is loaded from Postgres first if Redis does not have it)
   and read them and their token paths from Postgres;
2. step the engine over them (marked in flight until the step is committed: a node counts an
   attempt only if its unit dies then); the queue depth for the threshold is the unit's own frontier plus
   `external` = open nodes anywhere else (the frontier's SCARD at the last commit minus what this unit
   held then). A unit that holds the whole frontier sees external = 0 and builds the CLI's tree;
3. write each step (`models.node_writes.write_steps`, with the other units' steps waiting: idempotent,
   limits and the job's status checked under its row lock), then commit it to the frontier (children
   held by this unit, popped nodes gone). Writing step N overlaps computing step N+1;
4. keep following the children (their KV caches are here); give nodes back to the shared queue when
   holding more than `hold_limit` or when a peer idles, sending a task so the peer takes them;
5. stop when the job finishes (frontier empty or a limit reached: the job is finalized, once), is
   cancelled, the unit's time is up, the worker is stopping, or the unit's lease was lost; give back
   everything still held.

Any surprise (a node written by someone else, a lease lost) ends the unit cleanly rather than being
patched up: the frontier and the database stay consistent and the next unit starts afresh.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass

import redis

from tokentree.engine.analysis import model_metadata
from tokentree.engine.loading import LoadedModel, ModelLoadError, encode_prompt
from tokentree.engine.params import ParameterError, TreeParams
from tokentree.models.growths import growth_open_node_ids, job_growth, record_growth_end
from tokentree.models.jobs import finish_job, job_counts, seconds_since_start
from tokentree.models.node_writes import (
    Finish,
    Limits,
    OpenNode,
    Pop,
    load_nodes,
    open_node_ids,
    path_tokens,
    start_tree,
    tree_totals,
)
from tokentree.models.schema import Job
from tokentree.workers.errors import is_connection_loss
from tokentree.workers.frontier import FrontierCommit, HeldLease
from tokentree.workers.held import HeldTree, Step
from tokentree.workers.service import Outcome, Services
from tokentree.workers.writer import StepWrite, StepWriter, ThreadWriter, WriteResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Plan:
    """What the engine needs for a job, worked out once per unit."""

    job_id: str
    model: str
    params: TreeParams
    lm: LoadedModel
    prompt_ids: list[int]
    depth_limit: int | None

    @property
    def limits(self) -> Limits:
        return Limits(self.params.max_nodes, self.params.max_completed_paths)


def run_tree_unit(s: Services, job: Job) -> Outcome:
    """One unit of work on a tree job."""
    job_id, unit = str(job.id), s.new_unit()
    try:
        # A job grown in place runs its last growth: its own parameters, its limits counted from its start.
        growth = job_growth(job)
        params = TreeParams.from_dict(dict(job.parameters)) if growth is None else growth.rule_params()
        lm = s.models.get(job.model)
        prompt_ids = encode_prompt(lm, job.prompt, chat=job.chat, prefix=job.prefix)
    except (ParameterError, ModelLoadError) as exc:
        s.fail(job_id, str(exc))
        return Outcome.DONE
    if s.refuses(job_id, lm):
        return Outcome.IDLE
    with s.session_factory() as session:
        start = start_tree(session, job_id, job.prompt)
        if start is None:
            return Outcome.DONE
        log.info("job %s running on worker %s", job_id, s.config.name)
        depth_limit = None if lm.context_length is None else lm.context_length - len(prompt_ids)
        plan = _Plan(job_id, job.model, params, lm, prompt_ids, depth_limit)
        if start.node_count >= params.max_nodes or start.completed_paths >= params.max_completed_paths:
            finish_tree(s, plan)
            return Outcome.DONE
        if start.root is not None:
            # A fresh job: its root is its only node, so this unit holds it from the start (a duplicate
            # unit that loads the frontier meanwhile makes one of the two end early).
            s.frontier.load(job_id, [start.root.id], held_by=unit, ttl_s=s.config.lease_ttl_s)
        elif (ended := s.open_frontier(job_id, unit, lambda: open_node_ids(session, job_id) if growth is None
                                       else growth_open_node_ids(session, job_id, growth))) is not None:
            return ended
    with s.hold(job_id, unit) as lease:
        return _TreeUnit(s, plan, lease).run(start.root)


def finish_tree(s: Services, plan: _Plan) -> bool:
    """Finalize a finished tree job: succeeded, with its statistics. Exactly once (the first caller)."""
    with s.session_factory() as session:
        totals = tree_totals(session, plan.job_id)
        nodes, completed = totals.nodes, totals.completed_paths
        seconds = None if (ran := seconds_since_start(session, plan.job_id)) is None else round(ran, 4)
        stats = {"nodes": nodes, "expanded": totals.expanded, "completed_paths": completed,
                 "seconds": seconds}
        # The tree's metadata, less the model's name (the job keeps its allow-list name).
        result = {k: v for k, v in model_metadata(plan.lm).items() if k != "model"}
        result.update(prompt_token_ids=plan.prompt_ids, stats=stats, coverage=totals.coverage.to_json())
        record_growth_end(session, plan.job_id, nodes, completed)  # committed with the finish
        finished = finish_job(session, plan.job_id, "succeeded", result=result)
    s.frontier.clear(plan.job_id)
    if finished:
        log.info("job %s succeeded: %d nodes, %d completed paths", plan.job_id, nodes, completed)
    return finished


@dataclass
class _Pending:
    """A step whose writes are in flight."""

    step: Step
    pops: list[Pop]
    write: Future[WriteResult]


@dataclass
class _JobView:
    """What a unit knows of its job as a whole, as of its last written step."""

    node_count: int = 0  # all units' nodes
    completed_paths: int = 0
    open_count: int = 0  # open nodes anywhere (the frontier's size)
    external: int = 0  # open nodes this unit does not hold: the queue depth it adds to its own
    idle_peers: int = 0  # workers of the model waiting for work
    last_hand_off: float = 0.0


class _TreeUnit:
    def __init__(self, s: Services, plan: _Plan, lease: HeldLease) -> None:
        self.s = s
        self.plan = plan
        self.lease = lease
        runner = s.models.runner(plan.model)
        stepper = s.batcher.step if s.batcher is not None else None
        self.held = HeldTree(plan.lm, plan.params, plan.prompt_ids, plan.depth_limit, runner, stepper)
        self.view = _JobView()
        self.discarded: list[int] = []  # nodes popped by a step that was never written (still held)
        self.stats: dict[str, float] = {"steps": 0, "popped": 0, "taken": 0, "given": 0, "model_s": 0.0,
                                        "write_wait_s": 0.0, "started": time.monotonic()}
        self.deadline = self.stats["started"] + s.config.unit_seconds
        self.session = s.session_factory()
        # The process's writer (with its own connections), or one of this unit's own.
        self.writer: StepWriter = s.writer or ThreadWriter(s.session_factory, s.frontier)

    @property
    def job_id(self) -> str:
        return self.plan.job_id

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self, root: OpenNode | None) -> Outcome:
        """Run the unit; `root`: a fresh job's root, held by this unit already."""
        failed = False
        if self.s.batcher is not None:
            self.s.batcher.unit_started()
        try:
            if root is not None:
                self.held.adopt([root], {root.id: []}, completed=0, node_count=1)
                self.view = _JobView(node_count=1, open_count=1)
            outcome = self._loop(taken=root is not None)
            log.info("unit %s on job %s: %s after %.2fs, %s", self.lease.unit, self.job_id, outcome.value,
                     time.monotonic() - self.stats["started"],
                     ", ".join(f"{k} {round(v, 3)}" for k, v in self.stats.items() if k != "started"))
            return outcome
        except Exception as exc:
            failed = True
            if is_connection_loss(exc):
                # Postgres or Redis went away under the unit: not the nodes' fault. They go back uncounted
                # and the worker waits for the service (`WorkerRuntime.run`).
                log.warning("unit %s on job %s lost a connection: %s", self.lease.unit, self.job_id, exc)
                self.writer.wait()
                # If Redis itself is away, the lease expires instead (and a restarted Redis reloads).
                with contextlib.suppress(redis.RedisError):
                    self._release_all()
                raise
            log.exception("unit %s on job %s failed", self.lease.unit, self.job_id)
            return self._give_up(traceback.format_exc())
        finally:
            # A write in flight finishes first, so what it commits is given back too.
            self.writer.wait()
            if not failed:
                self._release_all()
            self.session.close()
            if self.s.batcher is not None:
                self.s.batcher.unit_ended()

    def _loop(self, taken: bool) -> Outcome:
        if not taken and not self._take():
            return self._finish() if self.view.open_count == 0 else Outcome.IDLE
        pending: _Pending | None = None
        while not (self._time_is_up() or self.s.stopping.is_set() or self.lease.lost.is_set()):
            if pending is not None and (self.held.done() or self._wants_hand_off()):
                verdict, pending = self._settle(pending), None
                if verdict is not None:
                    return verdict
                continue
            self._hand_off()
            if self.held.done():
                if len(self.held) > 0:
                    # Done with nodes left: a limit is reached. The held counts are the job's, as of the
                    # last write (this unit's nodes plus every other unit's), so the job is done.
                    return self._finish()
                if not self._take():
                    return self._finish() if self.view.open_count == 0 else Outcome.IDLE
                continue
            # The nodes the model runs on are in flight until their step is committed: if the worker dies
            # meanwhile, only they count an attempt. Those with no id yet are marked by the pending commit.
            if stepped := [i for i in self.held.next_batch(self.s.max_batch) if i is not None]:
                self.s.frontier.mark_in_flight(self.job_id, self.lease.unit, stepped)
            started = time.monotonic()
            step = self.held.step(self.s.max_batch, self.view.external)
            self.stats["model_s"] += time.monotonic() - started
            if pending is not None:
                verdict, pending = self._settle(pending), None
                if verdict is not None:
                    self.discarded = [i for i in (self.held.db_ids[p] for p in step.popped) if i is not None]
                    return verdict
            pending = self._submit(step)
            self.stats["steps"] += 1
            self.stats["popped"] += len(step.popped)
        if pending is not None:
            verdict = self._settle(pending)
            if verdict is not None:
                return verdict
        return Outcome.CONTINUE  # what is held is given back as the unit ends; another unit goes on

    def _time_is_up(self) -> bool:
        """Past `unit_seconds`, and other work waits for this worker's threads: the unit makes room (its
        job goes to the back of the queue). With nothing waiting it goes on, keeping its nodes' KV."""
        if time.monotonic() < self.deadline:
            return False
        if self.s.work_waiting(self.plan.model):
            return True
        self.deadline += self.s.config.unit_seconds
        return False

    # -- taking nodes ------------------------------------------------------------------------------------

    def _take(self) -> bool:
        """Lease up to `Services.hold_limit` open nodes and take them in; False when the queue had none."""
        cfg = self.s.config
        for _ in range(8):  # only nodes found done already are retried for; a few rounds at most
            leased = self.s.frontier.lease(self.job_id, self.lease.unit, self.s.hold_limit, cfg.lease_ttl_s)
            self.view.open_count = leased.open_count
            if not leased.node_ids:
                return False
            found = load_nodes(self.session, self.job_id, leased.node_ids)
            opened = [found[i] for i in leased.node_ids if i in found and found[i].is_open]
            settled = [i for i in leased.node_ids if i not in found or not found[i].is_open]
            if settled:
                # Written by a unit that died before its frontier commit: take them off the frontier and
                # put their open children on it.
                expanded = [i for i in settled if i in found and found[i].is_expanded]
                recovered = open_node_ids(self.session, self.job_id, expanded)
                self.s.frontier.commit([FrontierCommit(self.job_id, self.lease.unit, settled, [], recovered,
                                                       cfg.lease_ttl_s)])
            if not opened:
                continue
            paths = path_tokens(self.session, self.job_id, [n.id for n in opened])
            counts = job_counts(self.session, self.job_id)
            self.session.commit()
            if counts is None:
                return False
            self.view.node_count, self.view.completed_paths = counts
            self.held.adopt(opened, paths, completed=counts[1], node_count=counts[0])
            self.stats["taken"] += len(opened)
            self.view.external = leased.open_count - len(settled) - len(self.held)
            return True
        return False

    # -- writing steps ----------------------------------------------------------------------------------

    def _submit(self, step: Step) -> _Pending:
        """Send a step to be written. Its pops are read here, in the model's thread, so that only plain
        data goes to the writer (which may be another process)."""
        pops = self.held.pops(step)
        write = StepWrite(job_id=self.job_id, unit=self.lease.unit, worker=self.s.config.name,
                          model=self.plan.model, pops=pops, limits=self.plan.limits,
                          lease_ttl_s=self.s.config.lease_ttl_s,
                          children_in_flight=self.held.next_batch(self.s.max_batch).count(None))
        return _Pending(step, pops, self.writer.submit(write))

    def _settle(self, pending: _Pending) -> Outcome | None:
        """Take in a written step's results; an outcome if the unit must end because of them."""
        started = time.monotonic()
        done = pending.write.result()
        written, committed = done.written, done.committed
        self.stats["write_wait_s"] += time.monotonic() - started
        if not written.running or committed is None:
            log.info("job %s is %s: unit %s stops", self.job_id, written.status or "gone", self.lease.unit)
            self.s.frontier.clear(self.job_id)
            return Outcome.DONE
        unwritten = self.held.written(pending.step, written.child_ids)
        view = self.view
        mine_nodes = sum(len(ids) for ids in written.child_ids)
        mine_completed = sum(1 for p, o in zip(pending.pops, written.outcomes, strict=True)
                             if o == "applied" and isinstance(p, Finish) and p.reason == "stop")
        others_nodes = written.node_count - view.node_count - mine_nodes
        others_completed = written.completed_paths - view.completed_paths - mine_completed
        view.node_count, view.completed_paths = written.node_count, written.completed_paths
        if others_nodes > 0 or others_completed > 0:
            self.held.add_others(max(0, others_completed), max(0, others_nodes))
        limits = self.plan.limits
        if (written.node_count >= limits.max_nodes or written.completed_paths >= limits.max_completed_paths
                or committed.open_count == 0):
            return self._finish()
        surprised = any(o != "applied" for o in written.outcomes)
        if unwritten or committed.not_held or not committed.alive or surprised:
            # Another unit got to some of these nodes first (this unit was too slow to keep its lease):
            # stop here rather than reconcile; everything written is on the frontier already.
            log.warning("unit %s on job %s met nodes done elsewhere; ending it", self.lease.unit, self.job_id)
            self.held.drop(unwritten | self.held.local_ids(set(committed.not_held)))
            return Outcome.CONTINUE
        view.external = committed.open_count - pending.step.frontier_after
        view.open_count = committed.open_count
        view.idle_peers = committed.idle_peers
        return None

    # -- giving nodes back -------------------------------------------------------------------------------

    def _wants_hand_off(self) -> bool:
        return len(self.held) > self.s.hold_limit or self._peer_waits()

    def _peer_waits(self) -> bool:
        cfg = self.s.config
        return (self.view.idle_peers > 0 and len(self.held) >= 2 * cfg.split_min
                and time.monotonic() - self.view.last_hand_off > cfg.split_cooldown_s)

    def _hand_off(self) -> None:
        """Give surplus nodes back to the shared queue and send a unit to take them (only between
        written steps: what is given back must be on the frontier already)."""
        view, hold_limit = self.view, self.s.hold_limit
        count = max(0, len(self.held) - hold_limit)
        if self._peer_waits():
            # An equal share for each idle peer: they each take one from the queue.
            count = max(count, len(self.held) * view.idle_peers // (view.idle_peers + 1))
        if count <= 0:
            return
        given = self.held.give_back(count)
        self.stats["given"] += len(given)
        self.s.frontier.release(self.job_id, self.lease.unit, given)
        view.external += len(given)
        view.last_hand_off = time.monotonic()
        self.s.hand_off(self.job_id, self.plan.model, max(1, min(view.idle_peers, 8)))
        view.idle_peers = 0
        log.debug("unit %s gave %d nodes of job %s back", self.lease.unit, len(given), self.job_id)

    def _release_all(self, failed: bool = False) -> int:
        """End the unit: give back every node still held, in queue order (and anything else the frontier
        says it holds). With `failed`, count an attempt on each; the most attempts any has had."""
        return self.s.frontier.release(self.job_id, self.lease.unit, self.held.held_db_ids() + self.discarded,
                                       end_unit=True, failed=failed)

    def _give_up(self, error: str) -> Outcome:
        """After an error: give the nodes back, counting an attempt on each; fail the job at the limit."""
        self.writer.wait()
        attempts = self._release_all(failed=True)
        if attempts >= self.s.config.max_attempts:
            self.s.fail(self.job_id, f"expanding failed {attempts} times; the last error:\n{error}")
            return Outcome.DONE
        return Outcome.CONTINUE

    def _finish(self) -> Outcome:
        finish_tree(self.s, self.plan)
        return Outcome.DONE
