"""Writing a unit's steps: to Postgres (`models.node_writes.write_step`) and then to the frontier.

A tree unit writes step N while its model computes step N+1. Written from a thread of the worker's own
process, a step's writes (SQLAlchemy, psycopg and Redis client code: tens of microseconds of Python per
node) take the GIL in turns with the model's thread and slow it down wherever they overlap. So the
distributed worker writes from a process of its own (`ProcessWriter`), on another core; units only
send their steps' pops down a pipe. The writer process takes every step waiting in the pipe (a worker's
units step together, so their writes arrive together) and writes them in one transaction, one commit
for all (`write_and_commit`). The embedded mode, one process by design, writes from a thread
(`ThreadWriter`). At most one step is in flight per unit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tokentree.models.db import engine_from_settings, make_session_factory
from tokentree.models.node_writes import Limits, Pop, StepToWrite, StepWritten, open_node_ids, write_steps
from tokentree.models.settings import Settings
from tokentree.workers.errors import WriterConnectionLost, is_connection_loss
from tokentree.workers.frontier import Committed, Frontier, FrontierCommit, RedisFrontier, worker_redis

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
    children_in_flight: int = 0  # its first children, which the unit's next step runs on


@dataclass(frozen=True)
class WriteResult:
    written: StepWritten
    committed: Committed | None  # None when nothing was written (the job is no longer running)


def write_and_commit(session: Session, frontier: Frontier, steps: list[StepWrite]) -> list[WriteResult]:
    """Write steps (of any units) to the database in one transaction, then commit them to the frontier
    in one round trip: each step's popped nodes leave it, the children its unit keeps join it as held,
    and the open children of nodes found done elsewhere (by a unit that died before its frontier
    commit) join the shared queue."""
    written = write_steps(session, [StepToWrite(s.job_id, s.pops, s.limits, s.worker) for s in steps])
    commits = []
    for step, w in zip(steps, written, strict=True):
        if not w.running:
            continue
        outcomes = list(zip(step.pops, w.outcomes, strict=True))
        done = [p.node_id for p, o in outcomes if o == "done" and p.node_id is not None]
        commits.append(FrontierCommit(
            job_id=step.job_id, unit=step.unit,
            popped=[p.node_id for p, o in outcomes if o != "skipped" and p.node_id is not None],
            children=[i for ids in w.child_ids for i in ids if i not in w.finished_children],
            recovered=open_node_ids(session, step.job_id, done), ttl_s=step.lease_ttl_s, model=step.model,
            children_in_flight=step.children_in_flight,
        ))
    session.commit()  # ends the reads' transaction
    committed = iter(frontier.commit(commits))
    return [WriteResult(w, next(committed) if w.running else None) for w in written]


class ThreadWriter:
    """Writes from one thread of this process, on a session of its own (the embedded mode's way); one per
    unit, ended by `wait`."""

    def __init__(self, session_factory: sessionmaker[Session], frontier: Frontier) -> None:
        self.session, self.frontier = session_factory(), frontier
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="node-writer")

    def submit(self, step: StepWrite) -> Future[WriteResult]:
        return self.executor.submit(lambda: write_and_commit(self.session, self.frontier, [step])[0])

    def wait(self) -> None:
        self.executor.shutdown(wait=True)
        self.session.close()


class WriterDied(RuntimeError):
    """The writer process ended while a write was in flight (it is started again for the next one)."""


class WriterError(RuntimeError):
    """A write failed in the writer process; the message carries its traceback."""


class ProcessWriter:
    """Writes from a child process, started on first use and again after it dies; one per worker process,
    shared by its units (any thread may submit).

    The child is spawned (a fresh interpreter: no CUDA state, no model), never forked, and imports no
    torch. It ends when its pipe closes, so it never outlives its worker, even one killed by SIGKILL.
    Each step goes down the pipe with a number; a reader thread hands each reply to its step's future.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._pipe: Connection | None = None
        self._lock = threading.Lock()  # one sender at a time; guards the fields below
        self._in_flight: dict[int, Future[WriteResult]] = {}
        self._next = 0

    def start(self) -> None:
        """Start the process now rather than on the first write (its imports take a moment)."""
        with self._lock:
            self._started()

    def submit(self, step: StepWrite) -> Future[WriteResult]:
        future: Future[WriteResult] = Future()
        with self._lock:
            pipe = self._started()
            number, self._next = self._next, self._next + 1
            self._in_flight[number] = future
            try:
                pipe.send((number, step))
            except (BrokenPipeError, EOFError, OSError) as exc:
                self._in_flight.pop(number, None)
                self._stop()
                raise WriterDied(f"the node writer process is gone: {exc}") from exc
        return future

    def wait(self) -> None:
        """Until the writes in flight now are done (their effects stand whether or not anyone reads
        their results)."""
        with self._lock:
            pending = list(self._in_flight.values())
        for future in pending:
            with contextlib.suppress(Exception):
                future.result()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _read(self, pipe: Connection) -> None:
        """The reader thread of one writer process: replies to futures, until the pipe ends."""
        while True:
            try:
                replies = pipe.recv()
            except (EOFError, OSError):
                break
            for number, reply in replies:
                with self._lock:
                    future = self._in_flight.pop(number, None)
                if future is None:
                    continue
                if isinstance(reply, WriteResult):
                    future.set_result(reply)
                else:
                    future.set_exception(reply)
        with self._lock:
            if self._pipe is pipe:
                self._stop()
            lost, self._in_flight = self._in_flight, {}
        for future in lost.values():
            future.set_exception(WriterDied("the node writer process ended during a write"))

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
            threading.Thread(target=self._read, args=(parent,), name="tokentree-writer-replies",
                             daemon=True).start()
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


MAX_STEPS_PER_TRANSACTION = 256


def serve_writes(pipe: Connection, settings: Settings) -> None:
    """The writer process: write the steps received (all those waiting, together), answer each with its
    result or its error, until the pipe closes. Signals are the worker's to handle: it stops sending,
    and the pipe closes."""
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
                batch = [pipe.recv()]
                while len(batch) < MAX_STEPS_PER_TRANSACTION and pipe.poll():
                    batch.append(pipe.recv())
            except (EOFError, OSError):
                return
            try:
                pipe.send(_write_batch(session, frontier, batch))
            except (BrokenPipeError, OSError):
                return
    finally:
        session.close()
        engine.dispose()
        client.close()


def _write_batch(session: Session, frontier: Frontier, batch: list[tuple[int, StepWrite]]
                 ) -> list[tuple[int, WriteResult | Exception]]:
    """Replies (number, result or error, its traceback in its message) for a batch of numbered steps: all
    in one transaction, or, if that fails, one by one (so one step's error is only its own unit's)."""
    if len(batch) > 1:
        try:
            results = write_and_commit(session, frontier, [step for _, step in batch])
            return list(zip((number for number, _ in batch), results, strict=True))
        except Exception:
            with contextlib.suppress(Exception):  # the connection may be the thing that broke
                session.rollback()
    replies: list[tuple[int, WriteResult | Exception]] = []
    for number, step in batch:
        try:
            replies.append((number, write_and_commit(session, frontier, [step])[0]))
        except Exception as exc:
            with contextlib.suppress(Exception):
                session.rollback()
            kind = WriterConnectionLost if is_connection_loss(exc) else WriterError
            replies.append((number, kind("".join(traceback.format_exception(exc)))))
    return replies


# Where a unit sends its steps: `submit` only once the previous write's result was taken (or the unit gave
# up on it); `wait` blocks until nothing is in flight.
StepWriter = ProcessWriter | ThreadWriter
