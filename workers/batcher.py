"""Continuous batching: the worker's model thread steps the trees of every running unit together.

A worker runs many units at once (one thread each, Celery's thread pool), and none of them touches the
model. A unit that wants a step hands its tree to `StepBatcher.step` and waits; the model thread takes
every tree that is waiting, steps them in one forward pass per model (`engine.expand.step_trees`: each
tree's rows get its own sampler settings, and each tree applies the rule on its own, so batching never
changes a tree), and wakes their units. Units join and leave between steps; a tree left out because the
batch was full goes first next time. A unit's KV stays in this process, with the model, for as long as
the unit holds its nodes.

Gathering: once a request arrives, the thread waits up to `gather_s` for the other running units'
requests, so that units in lockstep (the usual case: they all step, then write) share a step.
A step that raises is retried tree by tree, so one tree's error fails only its own unit.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from tokentree.engine.expand import Expander, StepResult, step_trees

log = logging.getLogger(__name__)


@dataclass
class _Request:
    tree: Expander
    external_queue_depth: int
    future: Future[StepResult] = field(default_factory=Future)


class StepBatcher:
    """One model thread per worker process; `step` is called from the units' threads."""

    def __init__(self, max_batch: int, gather_s: float = 0.002) -> None:
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._waiting: list[_Request] = []
        self._members = 0  # units running now (each asks for a step, writes, asks again)
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="tokentree-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def unit_started(self) -> None:
        with self._changed:
            self._members += 1
            self._changed.notify_all()

    def unit_ended(self) -> None:
        with self._changed:
            self._members -= 1
            self._changed.notify_all()

    def step(self, tree: Expander, max_batch: int, external_queue_depth: int) -> StepResult:
        """Step this tree with the others waiting (blocks until done). `max_batch` is the batcher's."""
        request = _Request(tree, external_queue_depth)
        with self._changed:
            if self._stopped:
                raise RuntimeError("the worker's model thread has stopped")
            self._waiting.append(request)
            self._changed.notify_all()
        return request.future.result()

    # -- the model thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            for group in _by_runner(batch):
                self._step(group)

    def _gather(self) -> list[_Request] | None:
        with self._changed:
            while not self._waiting and not self._stopped:
                self._changed.wait()
            if self._stopped:
                for request in self._waiting:
                    request.future.set_exception(RuntimeError("the worker's model thread has stopped"))
                return None
            deadline = time.monotonic() + self.gather_s
            while len(self._waiting) < self._members and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            batch, self._waiting = self._waiting, []
            return batch

    def _step(self, requests: list[_Request]) -> None:
        for request in requests:
            request.tree.external_queue_depth = request.external_queue_depth
        try:
            results = step_trees([r.tree for r in requests], self.max_batch)
        except Exception as exc:
            if len(requests) == 1:
                requests[0].future.set_exception(exc)
                return
            log.warning("a batched step of %d trees failed; stepping them one by one", len(requests))
            for request in requests:
                self._step([request])
            return
        left_out = []
        for request, result in zip(requests, results, strict=True):
            if result is None:
                left_out.append(request)
            else:
                request.future.set_result(result)
        if left_out:
            with self._changed:
                self._waiting[:0] = left_out
                self._changed.notify_all()


def _by_runner(requests: list[_Request]) -> list[list[_Request]]:
    """Trees of one model share its runner (and KV pool); each model steps on its own."""
    groups: dict[int, list[_Request]] = {}
    for request in requests:
        groups.setdefault(id(request.tree.runner), []).append(request)
    return list(groups.values())
