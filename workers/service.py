"""What every kind of job's unit of work shares: the worker's configuration, its models, how a unit's
lease is kept alive, and how a job is finished.

A unit of work is one short run on one job (a task message in the distributed mode); it ends with an
`Outcome` that tells the transport what to do next.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from tokentree.engine.loading import LoadedModel, ModelLoadError, ModelSpec, load_model
from tokentree.engine.params import TreeParams
from tokentree.engine.runner import ModelRunner
from tokentree.models.jobs import JobId, claim_model, finish_job
from tokentree.models.settings import Settings
from tokentree.workers.frontier import Expired, Frontier, HeldLease
from tokentree.workers.settings import WorkerSettings

if TYPE_CHECKING:
    from tokentree.workers.batcher import StepBatcher
    from tokentree.workers.runtime import Heartbeat
    from tokentree.workers.writer import StepWriter

log = logging.getLogger(__name__)

INIT_LOCK_S = 60.0  # one unit loads a job's frontier from Postgres; the others wait this long at most
JOB_NODE = 0  # the one node of a job that runs as one piece (logprobs): the job itself


class Outcome(enum.StrEnum):
    CONTINUE = "continue"  # the job has open nodes in the shared queue: send another unit
    IDLE = "idle"  # nothing to take: the rest of the job is held by other units, which go on with it
    DONE = "done"  # the job is finished, failed, cancelled or gone: nothing more to send


class ModelRegistry:
    """The allow-list's models, loaded on first use (once per process: `load_model` caches them)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Loading is not thread-safe in transformers (a model is built on the meta device first); the
        # embedded worker's thread and a caller's thread may ask at once.
        self._lock = threading.Lock()
        self._runners: dict[str, ModelRunner] = {}

    def spec(self, name: str) -> ModelSpec:
        source = self.settings.models.get(name)
        if source is None:
            raise ModelLoadError(f"model {name!r} is not in this service's allow-list")
        # The entry's own dtype, device and quantization (`name=source;dtype=bf16;quantize=4bit`), else
        # the service's TOKENTREE_DTYPE and TOKENTREE_DEVICE.
        options = self.settings.options_of(name)
        return ModelSpec(name=source, dtype=options.dtype, device=options.device,  # type: ignore[arg-type]
                         quantization=options.quantize)  # type: ignore[arg-type]

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            return load_model(self.spec(name))

    def runner(self, name: str) -> ModelRunner:
        """The model's runner, one per process: every unit's trees of this model share its KV pool and
        its prompts' KV, and can step together."""
        lm = self.get(name)
        with self._lock:
            runner = self._runners.get(name)
            if runner is None or runner.model is not lm.model:
                # Its top_k is a default only: each tree asks for its own (`engine.expand.top_k_for`).
                runner = self._runners[name] = ModelRunner(lm.model, top_k=TreeParams().max_candidates)
            return runner


@dataclass
class Services:
    """Everything a unit of work uses, wired once per process."""

    config: WorkerSettings
    max_batch: int  # nodes evaluated in one forward pass (TOKENTREE_MAX_BATCH, as the CLI's --max-batch)
    session_factory: sessionmaker[Session]
    frontier: Frontier
    models: ModelRegistry
    # Renews the leases of running units (the distributed worker's heartbeat); None: leases never expire
    # (the embedded mode).
    keeper: Heartbeat | None = None
    # Set when the process is asked to stop: units end at their next step, giving their nodes back.
    stopping: threading.Event = field(default_factory=threading.Event)
    # Hands the job to up to n idle peers (job, model, n): the distributed mode sends them tasks.
    hand_off: Callable[[str, str, int], None] = lambda job_id, model, count: None
    # Whether units of work wait for this worker's threads (model): a unit past its time ends only then,
    # since ending drops the KV of every node it holds.
    work_waiting: Callable[[str], bool] = lambda model: False
    # Where tree units write their steps from, shared by the process's units (the distributed worker's
    # writer process); None: each unit writes from a thread of its own (the embedded mode).
    writer: StepWriter | None = None
    # The process's model thread, stepping every running unit's tree together (workers/batcher.py);
    # None: each unit steps its own tree (the embedded mode's single unit).
    batcher: StepBatcher | None = None

    @property
    def hold_limit(self) -> int:
        """Open nodes a unit keeps following before it gives the surplus back to the shared queue. Up to
        this many, one worker on a job builds exactly the CLI's tree (nothing leaves its FIFO order)."""
        return self.config.hold_limit or 4 * self.max_batch

    def hold(self, job_id: str, unit: str) -> contextlib.AbstractContextManager[HeldLease]:
        """The unit's lease, kept alive until the block ends."""
        if self.keeper is None:
            return contextlib.nullcontext(HeldLease(job_id, unit))
        return self.keeper.hold(job_id, unit)

    def open_frontier(self, job_id: str, unit: str, open_ids: Callable[[], list[int]]) -> Outcome | None:
        """Before a unit leases: the job's frontier, loaded from `open_ids()` if Redis does not have it
        (first start, or Redis lost it), and dead units' nodes taken back. An outcome if the unit ends
        here: another unit is loading the frontier, or a node was taken back too often (the job fails)."""
        if not self.frontier.ready(job_id):
            if not self.frontier.try_lock_init(job_id, unit, INIT_LOCK_S):
                return Outcome.IDLE  # another unit is loading it, and goes on with it
            self.frontier.load(job_id, open_ids())
        return Outcome.DONE if self.take_back(job_id) is None else None

    def take_back(self, job_id: str) -> Expired | None:
        """Take the nodes of dead units back to the queue; None if one was taken back `max_attempts` times
        (it may kill whoever touches it): then the job has failed."""
        expired = self.frontier.expire(job_id, self.config.max_attempts)
        if not expired.poisoned:
            return expired
        node, attempts = next(iter(expired.poisoned.items()))
        what = "the job" if node == JOB_NODE else f"node {node}"
        self.fail(job_id, f"{what} was taken back from {attempts} workers that stopped while stepping it "
                          f"(it may crash the worker, out of memory?); given up after {attempts} attempts")
        return None

    def new_unit(self) -> str:
        """A name for a unit of work: this worker's name and a random part (`worker:random`)."""
        return f"{self.config.name}:{uuid.uuid4().hex[:10]}"

    def refuses(self, job_id: JobId, lm: LoadedModel) -> bool:
        """Whether this worker must leave the job alone because the job is built with another model than
        `lm` (an allow-list entry pointing elsewhere, another dtype or quantization: a rolling upgrade
        does this). Said loudly, since the job waits for a worker with its model. The first worker to ask
        records its model's fingerprint with the job."""
        with self.session_factory() as session:
            recorded = claim_model(session, job_id, lm.fingerprint)
        if recorded is None or recorded == lm.fingerprint:
            return False
        log.error("job %s refused: it is built with model %s fingerprinted %s, and this worker's %s is %s "
                  "(another checkpoint, dtype or quantization); its nodes are left to a worker with the "
                  "job's model", job_id, lm.spec.name, recorded, lm.spec.name, lm.fingerprint)
        return True

    def fail(self, job_id: JobId, error: str) -> bool:
        """Fail the job (once) and forget its frontier."""
        with self.session_factory() as session:
            failed = finish_job(session, job_id, "failed", error=error)
        self.frontier.clear(job_id)
        if failed:
            log.warning("job %s failed: %s", job_id, error.splitlines()[0] if error else "")
        return failed
