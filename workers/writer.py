"""Writing a unit's steps: to Postgres (`models.node_writes.write_step`) and then to the frontier.

A tree unit writes step N while its model computes step N+1. Written from a thread of the worker's own
process, a step's writes (SQLAlchemy, psycopg and Redis client code: tens of microseconds of Python per
node) take the GIL in turns with the model's thread and slow it down wherever they overlap. So the
distributed worker writes from a process of its own (`ProcessWriter`), on another core; the model's
thread only sends the step's pops down a pipe. The embedded mode, one process by design, writes from a
thread (`ThreadWriter`). Both run `write_and_commit`, and at most one step is in flight per unit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from sqlalchemy.orm import Session

from models.db import engine_from_settings, make_session_factory
from models.node_writes import Limits, Pop, StepWritten, children_of, write_step
from models.settings import Settings
from workers.errors import WriterConnectionLost, is_connection_loss
from workers.frontier import Committed, Frontier, RedisFrontier, worker_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepWrite:
    """One step of a unit, to write: its pops in pop order, and where they go."""

    job_id: str
    unit: str
    worker: str
    model: str
    pops: list[Pop]
    limits: Limits
    lease_ttl_s: float


@dataclass(frozen=True)
class WriteResult:
    written: StepWritten
    committed: Committed | None  # None when nothing was written (the job is no longer running)


def open_children(session: Session, job_id: str, parents: list[int]) -> list[int]:
    """The open children of `parents` (ids), committed reads."""
    if not parents:
        return []
    kids = children_of(session, job_id, parents)
    session.commit()
    return [k.id for ks in kids.values() for k in ks if k.is_open]


def write_and_commit(session: Session, frontier: Frontier, step: StepWrite) -> WriteResult:
    """Write the step to the database, then commit it to the frontier: the popped nodes leave it, the
    children the unit keeps join it as held, and the open children of nodes found done elsewhere (by a
    unit that died before its frontier commit) join the shared queue."""
    written = write_step(session, step.job_id, step.pops, step.limits, step.worker)
    if not written.running:
        return WriteResult(written, None)
    outcomes = list(zip(step.pops, written.outcomes, strict=True))
    done = [p.node_id for p, o in outcomes if o == "done" and p.node_id is not None]
    recovered = open_children(session, step.job_id, done)
    popped = [p.node_id for p, o in outcomes if o != "skipped" and p.node_id is not None]
    children = [i for ids in written.child_ids for i in ids if i not in written.finished_children]
    committed = frontier.commit(step.job_id, step.unit, popped, children, recovered, step.lease_ttl_s,
                                step.model)
    return WriteResult(written, committed)


class PendingWrite(Protocol):
    def result(self) -> WriteResult: ...


class StepWriter(Protocol):
    """Where a unit sends its steps; `submit` is called only once the previous write's result was taken
    (or the unit gave up on it), and `wait` blocks until nothing is in flight."""

    def submit(self, step: StepWrite) -> PendingWrite: ...

    def wait(self) -> None: ...


class InlineWriter:
    """Writes in the caller's thread (no overlap with the model)."""

    def __init__(self, session: Session, frontier: Frontier) -> None:
        self.session, self.frontier = session, frontier

    def submit(self, step: StepWrite) -> PendingWrite:
        future: Future[WriteResult] = Future()
        future.set_result(write_and_commit(self.session, self.frontier, step))
        return future

    def wait(self) -> None:
        pass


class ThreadWriter:
    """Writes from one thread of this process (the embedded mode's way); one per unit, ended by `wait`."""

    def __init__(self, session: Session, frontier: Frontier) -> None:
        self.session, self.frontier = session, frontier
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="node-writer")

    def submit(self, step: StepWrite) -> PendingWrite:
        return self.executor.submit(write_and_commit, self.session, self.frontier, step)

    def wait(self) -> None:
        self.executor.shutdown(wait=True)


class WriterDied(RuntimeError):
    """The writer process ended while a write was in flight (it is started again for the next one)."""


class WriterError(RuntimeError):
    """A write failed in the writer process; the message carries its traceback."""


class ProcessWriter:
    """Writes from a child process, started on first use and again after it dies; one per worker process.

    The child is spawned (a fresh interpreter: no CUDA state, no model), never forked, and imports no
    torch. It ends when its pipe closes, so it never outlives its worker, even one killed by SIGKILL.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._pipe: Connection | None = None
        self._in_flight = False

    def start(self) -> None:
        """Start the process now rather than on the first write (its imports take a moment)."""
        self._started()

    def submit(self, step: StepWrite) -> PendingWrite:
        self.wait()  # a result the unit never took (it ended early): its effects are in place already
        pipe = self._started()
        try:
            pipe.send(step)
        except (BrokenPipeError, EOFError, OSError) as exc:
            self._stop()
            raise WriterDied(f"the node writer process is gone: {exc}") from exc
        self._in_flight = True
        return _PendingProcessWrite(self)

    def wait(self) -> None:
        if self._in_flight:
            with contextlib.suppress(Exception):  # a write nobody waits for any more; its effects stand
                self._receive()

    def close(self) -> None:
        self._stop()

    def _receive(self) -> WriteResult:
        assert self._pipe is not None
        try:
            kind, payload, connection_loss = self._pipe.recv()
        except (EOFError, OSError) as exc:
            self._stop()
            raise WriterDied("the node writer process ended during a write") from exc
        finally:
            self._in_flight = False
        if kind == "ok":
            return payload
        if connection_loss:
            raise WriterConnectionLost(payload)
        raise WriterError(payload)

    def _started(self) -> Connection:
        if self._process is None or not self._process.is_alive():
            self._stop()
            parent, child = self._context.Pipe()
            self._process = self._context.Process(
                target=serve_writes, args=(child, self.settings),
                name="tokentree-node-writer", daemon=True,
            )
            self._process.start()
            child.close()
            self._pipe = parent
        assert self._pipe is not None
        return self._pipe

    def _stop(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._process is not None:
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
            self._process = None
        self._in_flight = False


@dataclass
class _PendingProcessWrite:
    writer: ProcessWriter

    def result(self) -> WriteResult:
        return self.writer._receive()


def serve_writes(pipe: Connection, settings: Settings) -> None:
    """The writer process: write each step received, answer with its result or its error, until the
    pipe closes. Signals are the worker's to handle: it stops sending, and the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    engine = engine_from_settings(settings)
    assert settings.redis_url is not None, "the writer process serves the distributed mode"
    client = worker_redis(settings.redis_url)
    frontier = RedisFrontier(client)
    session = make_session_factory(engine)()
    try:
        while True:
            try:
                step = pipe.recv()
            except (EOFError, OSError):
                return
            reply: tuple[str, Any, bool]
            try:
                reply = ("ok", write_and_commit(session, frontier, step), False)
            except Exception as exc:
                with contextlib.suppress(Exception):  # the connection may be the thing that broke
                    session.rollback()
                reply = ("error", "".join(traceback.format_exception(exc)), is_connection_loss(exc))
            try:
                pipe.send(reply)
            except (BrokenPipeError, OSError):
                return
    finally:
        session.close()
        engine.dispose()
        client.close()

