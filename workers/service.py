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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from engine.analysis import model_metadata
from engine.loading import LoadedModel, ModelLoadError, ModelSpec, load_model
from engine.runner import ModelRunner
from engine.scheduler import MAX_CANDIDATES
from models.jobs import JobId, finish_job, get_job
from models.schema import TERMINAL_STATUSES, Job
from models.settings import Settings
from workers.frontier import Frontier, HeldLease
from workers.settings import WorkerSettings

if TYPE_CHECKING:
    from workers.batcher import StepBatcher
    from workers.writer import StepWriter

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    CONTINUE = "continue"  # the job has open nodes in the shared queue: send another unit
    IDLE = "idle"  # nothing to take: the rest of the job is held by other units, which go on with it
    DONE = "done"  # the job is finished, failed, cancelled or gone: nothing more to send


class LeaseKeeper(Protocol):
    """Keeps the leases of the units running in this process alive (a heartbeat), until they end."""

    def hold(self, job_id: str, unit: str, kind: str) -> contextlib.AbstractContextManager[HeldLease]: ...


class NoExpiryKeeper:
    """For the embedded mode, where leases never expire."""

    @contextlib.contextmanager
    def hold(self, job_id: str, unit: str, kind: str) -> Iterator[HeldLease]:
        yield HeldLease(job_id, unit, kind)


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
                runner = self._runners[name] = ModelRunner(lm.model, top_k=MAX_CANDIDATES)
            return runner


def poison_message(node: int, attempts: int) -> str:
    return (f"node {node} was taken back from {attempts} workers that stopped before finishing it (it may "
            f"crash the worker, out of memory?); given up after {attempts} attempts")


def result_metadata(lm: LoadedModel, **extra: Any) -> dict[str, Any]:
    """What a finished job's `result` adds to its tree's metadata (the allow-list name stays the model)."""
    metadata = {k: v for k, v in model_metadata(lm).items() if k != "model"}
    metadata.update(extra)
    return metadata


@dataclass
class Services:
    """Everything a unit of work uses, wired once per process."""

    config: WorkerSettings
    max_batch: int  # nodes evaluated in one forward pass (TOKENTREE_MAX_BATCH, as the CLI's --max-batch)
    session_factory: sessionmaker[Session]
    frontier: Frontier
    models: ModelRegistry
    keeper: LeaseKeeper
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

    def new_unit(self) -> str:
        """A name for a unit of work: this worker's name and a random part (`worker:random`)."""
        return f"{self.config.name}:{uuid.uuid4().hex[:10]}"

    def job_to_run(self, session: Session, job_id: JobId) -> Job | None:
        """The job, or None when there is nothing to do on it: it is gone or ended (cancelled too; then
        whatever Redis still keeps of it is cleared)."""
        job = get_job(session, job_id)
        if job is None or job.status in TERMINAL_STATUSES:
            self.frontier.clear(job_id)
            return None
        return job

    def fail(self, job_id: JobId, error: str) -> bool:
        """Fail the job (once) and forget its frontier."""
        with self.session_factory() as session:
            failed = finish_job(session, job_id, "failed", error=error)
        self.frontier.clear(job_id)
        if failed:
            log.warning("job %s failed: %s", job_id, error.splitlines()[0] if error else "")
        return failed
