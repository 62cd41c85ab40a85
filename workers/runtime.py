"""A worker process's wiring: settings, database, Redis, the frontier, the models, and the heartbeat
thread that keeps leases alive, tells peers whether this worker idles, and runs the sweeper.

Built lazily, on the first task or when the worker is ready, in the process that runs the tasks (the
pool is threads: nothing here is ever forked, so a CUDA context made here stays valid). Units run in
Celery's threads; the model runs in one thread of its own (`StepBatcher`), stepping their trees together.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import redis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from tokentree.models import worker_registry
from tokentree.models.db import engine_from_settings, make_session_factory
from tokentree.models.queues import model_queue, worker_queue
from tokentree.models.settings import Settings, get_settings
from tokentree.models.worker_registry import WorkerBeat
from tokentree.workers.batcher import StepBatcher
from tokentree.workers.errors import DEPENDENCY_ERRORS, is_connection_loss
from tokentree.workers.frontier import (
    IDLE_WINDOW_MS,
    HeldLease,
    RedisFrontier,
    idle_key,
    job_key,
    worker_redis,
)
from tokentree.workers.service import ModelRegistry, Outcome, Services
from tokentree.workers.settings import WorkerSettings
from tokentree.workers.sweeper import Sweeper
from tokentree.workers.units import run_unit
from tokentree.workers.writer import ProcessWriter

log = logging.getLogger(__name__)

# Waiting for Postgres or Redis to come back: the first check after this, then twice as long each time up
# to the maximum (so a unit resumes at most that long after they are back).
OUTAGE_FIRST_DELAY_S = 0.5
OUTAGE_MAX_DELAY_S = 5.0
# Postgres connections of a worker process (its units, heartbeat and sweeper), beyond a few in a burst.
DB_CONNECTIONS = 16
# A connection that broke while both answer again (a blip): the unit runs again at once, this many times.
BLIP_RETRIES = 5


class Heartbeat:
    """One daemon thread: renews the leases of running units, refreshes this worker's idle mark, and
    sweeps. A unit whose renewal fails (its lease expired and its nodes were taken back) is told so."""

    def __init__(self, runtime: WorkerRuntime, beat: WorkerBeat | None) -> None:
        self.runtime = runtime
        # This worker's heartbeat key (models/worker_registry.py): claimed when the process starts
        # (workers/tasks.py, before Celery takes work), else by `WorkerRuntime.start`.
        self.beat = beat
        self.fingerprints: dict[str, str] = {}  # the loaded models' (set once they are), told in each beat
        self._name_lost = False
        self._holdings: dict[str, HeldLease] = {}
        self._lock = threading.Lock()
        self._units = 0  # units running now (Celery's threads)
        self._waiting = 0  # units waiting out an outage (`WorkerRuntime.wait_out_outage`)
        self._idle_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokentree-heartbeat", daemon=True)
        self._next_sweep = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)  # no beat may renew the worker's key after it is released

    @contextlib.contextmanager
    def hold(self, job_id: str, unit: str) -> Iterator[HeldLease]:
        lease = HeldLease(job_id, unit)
        with self._lock:
            self._holdings[unit] = lease
        try:
            yield lease
        finally:
            with self._lock:
                self._holdings.pop(unit, None)

    def refresh_idle(self) -> None:
        """After the worker became ready, or began to stop."""
        with self._idle_lock:
            self._mark_idle()

    def unit_started(self) -> None:
        with self._idle_lock:
            self._units += 1
            if self._units == 1:  # it was idle
                self._mark_idle()

    def unit_ended(self) -> None:
        with self._idle_lock:
            self._units = max(0, self._units - 1)
            if self._units == 0:
                self._mark_idle()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A unit waits out an outage: it holds no nodes (it gave them back), so peers may hand this worker
        work meanwhile; its beats say "waiting" (readable in its heartbeat key, and `tokentree status`)."""
        self.unit_ended()
        with self._idle_lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._idle_lock:
                self._waiting -= 1
            self.unit_started()

    def _mark_idle(self) -> None:
        """Tell peers whether this worker waits for work. Under the lock: a heartbeat must never mark
        the worker idle again just after the task it started marked it busy."""
        r = self.runtime.redis
        name = self.runtime.services.config.name
        pipe = r.pipeline(transaction=False)
        now_ms = self.runtime.frontier.now_ms()  # the clock commit.lua reads the marks by, not this host's
        for model in self.runtime.models:
            if self._units or not self.runtime.ready:
                pipe.zrem(idle_key(model), name)
            else:
                pipe.zadd(idle_key(model), {name: now_ms})
                pipe.zremrangebyscore(idle_key(model), "-inf", now_ms - 10 * IDLE_WINDOW_MS)
        pipe.execute()

    def _run(self) -> None:
        config = self.runtime.services.config
        tick = min(1.0, config.lease_ttl_s / 4)
        down: str | None = None  # what the last beat could not reach
        while not self._stop.wait(tick):
            try:
                self._beat()
                # A beat may succeed without the database (another worker's turn to sweep): check.
                if down is not None and (down := self.runtime.unreachable()) is None:
                    log.warning("heartbeat: Postgres and Redis answer again")
            except DEPENDENCY_ERRORS as exc:
                # An outage gets one line when it starts and one when it ends, not a traceback a beat.
                if down is None:
                    down = self.runtime.unreachable() or f"{type(exc).__name__}: {first_line(exc)}"
                    log.warning("heartbeat: %s; leases and sweeps resume when it is back", down)
            except Exception:
                log.exception("heartbeat failed")

    def beat_presence(self, state: str) -> None:
        """Renew this worker's heartbeat key: it is alive (busy or not) for `heartbeat_ttl_s` more."""
        if self.beat is None:
            return
        self.beat = self.beat.now(state, self.fingerprints)
        if worker_registry.renew(self.runtime.redis, self.beat, self.runtime.config.heartbeat_ttl_s):
            self._name_lost = False
        elif not self._name_lost:
            self._name_lost = True
            holder = worker_registry.holder_of(self.runtime.redis, self.beat.name)
            log.error("worker %s: another worker (%s) has taken this name; status and metrics show that one",
                      self.beat.name, f"pid {holder.pid} on {holder.host}" if holder else "gone since")

    @property
    def state(self) -> str:
        if self.runtime.services.stopping.is_set():
            return "stopping"
        if not self.runtime.ready:
            return "starting"
        if self._waiting:
            return "waiting"
        return "busy" if self._units else "idle"

    def _beat(self) -> None:
        self.beat_presence(self.state)
        frontier = self.runtime.frontier
        ttl = self.runtime.services.config.lease_ttl_s
        with self._lock:
            holdings = list(self._holdings.values())
        for lease, renewed in zip(holdings, frontier.renew(holdings, ttl), strict=True):
            if not renewed:
                lease.lost.set()  # it expired and its nodes were taken back: the unit must stop
        with self._idle_lock:
            self._mark_idle()
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.runtime.config.sweep_interval_s
            self.runtime.sweeper.sweep()


class WorkerRuntime:
    """Everything a worker process needs, built once."""

    def __init__(self, settings: Settings | None = None, worker: WorkerSettings | None = None,
                 send: Callable[[str, str], None] | None = None, beat: WorkerBeat | None = None) -> None:
        self.settings = settings or get_settings()
        if self.settings.redis_url is None or self.settings.database_url is None:
            raise RuntimeError("a worker needs TOKENTREE_REDIS_URL and TOKENTREE_DATABASE_URL (Postgres)")
        self.config = worker or WorkerSettings()
        self.models = self.config.served_models(self.settings.models)
        self.redis = worker_redis(self.settings.redis_url)
        # A unit holds a connection only while it reads (its writes go through the writer process), one
        # at a time: a bounded pool is enough however many units run, and in a burst they wait their turn
        # rather than open a connection each (100 units on each of a few workers would exhaust Postgres).
        self.engine = engine_from_settings(self.settings, pool_size=min(self.config.units, DB_CONNECTIONS),
                                           max_overflow=4, pool_timeout=60)
        self.frontier = RedisFrontier(self.redis)
        self.heartbeat = Heartbeat(self, beat)
        # Steps are written from a process of their own (see workers/writer.py).
        self.writer = ProcessWriter(self.settings)
        self._send = send
        self._send_lock = threading.Lock()
        self.services = Services(
            config=self.config,
            max_batch=self.settings.max_batch,
            session_factory=make_session_factory(self.engine),
            frontier=self.frontier,
            models=ModelRegistry(self.settings),
            keeper=self.heartbeat,
            hand_off=self.hand_to_peers,
            work_waiting=self.work_waiting,
            writer=self.writer,
            batcher=StepBatcher(self.settings.max_batch),
        )
        self.sweeper = Sweeper(self.services, self.frontier, self.models, self.send,
                               self.config.sweep_interval_s, self.config.stale_after_s)
        self.ready = False

    def start(self) -> None:
        """Claim the worker's name (NameTaken if a live worker has it), start the writer and heartbeat."""
        if self.heartbeat.beat is None:
            self.heartbeat.beat = WorkerBeat(name=self.config.name, models=tuple(self.models))
            worker_registry.claim(self.redis, self.heartbeat.beat, self.config.startup_ttl_s)
        if self.config.threads > 0:
            import torch

            torch.set_num_threads(self.config.threads)
        assert self.services.batcher is not None
        self.services.batcher.start()
        self.writer.start()
        self.heartbeat.start()

    def preload(self) -> None:
        """Load the models, and say in the heartbeat which each is (its fingerprint)."""
        fingerprints = {}
        for model in self.models:
            started = time.perf_counter()
            fingerprints[model] = self.services.models.get(model).fingerprint
            log.info("model %s loaded in %.1fs (fingerprint %s)", model, time.perf_counter() - started,
                     fingerprints[model])
        self.heartbeat.fingerprints = fingerprints  # the heartbeat thread's next beat says so

    def mark_ready(self) -> None:
        self.ready = True
        self.heartbeat.refresh_idle()
        self.heartbeat.beat_presence("idle")

    def send(self, job_id: str, model: str) -> None:
        """Send a unit of work on the job to its model's queue, and note when (for the sweeper)."""
        self._send_to(job_id, model_queue(model))

    def hand_to_peers(self, job_id: str, model: str, count: int) -> None:
        """Send units of work on the job to up to `count` idle peers, each on its own queue (this
        worker's free threads would otherwise take its hand-offs back); to the model's queue if none
        idles."""
        since_ms = self.frontier.now_ms() - IDLE_WINDOW_MS
        idle = [n.decode() for n in self.redis.zrangebyscore(idle_key(model), since_ms, "+inf")]  # type: ignore[union-attr]
        peers = [name for name in idle if name != self.services.config.name][:count]
        for peer in peers:
            self._send_to(job_id, worker_queue(peer))
        if not peers:
            self.send(job_id, model)

    def work_waiting(self, model: str) -> bool:
        """Whether task messages wait on the model's queue or this worker's own (Celery keeps a Redis list
        per queue)."""
        pipe = self.redis.pipeline(transaction=False)
        for queue in (model_queue(model), worker_queue(self.config.name)):
            pipe.llen(queue)
        return any(pipe.execute())

    def _send_to(self, job_id: str, queue: str) -> None:
        if self._send is None:
            raise RuntimeError("this runtime cannot send tasks")
        with self._send_lock:
            self._send(job_id, queue)
        self.redis.set(job_key(job_id, "sent"), "1", px=int(self.config.stale_after_s * 1000))

    def run(self, job_id: str) -> Outcome:
        """One unit of work on the job, of whatever kind; hands the job on when it needs more units.

        A unit that fails because Postgres or Redis is unreachable waits for them, checking with
        exponential backoff, and runs again once both answer; meanwhile its nodes stay on the frontier, so
        if this worker dies the sweeper sends a unit for them. A connection that broke while both
        answer again runs the unit again at once (a few times). Any other error is raised.
        """
        blips = 0
        while True:
            try:
                outcome, model = run_unit(self.services, job_id)
                if outcome is Outcome.CONTINUE and model is not None:
                    self.send(job_id, model)
                return outcome
            except DEPENDENCY_ERRORS as exc:
                if self.wait_out_outage(job_id):
                    continue
                if is_connection_loss(exc) and blips < BLIP_RETRIES and not self.services.stopping.is_set():
                    blips += 1
                    log.warning("job %s: a connection broke (%s); the unit runs again", job_id,
                                first_line(exc))
                    continue
                raise

    def unreachable(self) -> str | None:
        """What this worker cannot reach now ("Postgres (...)", "Redis (...)"), or None."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return f"Postgres unreachable ({first_line(getattr(exc, 'orig', None) or exc)})"
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            return f"Redis unreachable ({first_line(exc)})"
        return None

    def wait_out_outage(self, job_id: str) -> bool:
        """After a unit's error: True once Postgres and Redis answer again (the unit should run again);
        False when they answered all along (the error is the unit's own), when they are still away after
        `outage_wait_s`, or when the worker is stopping."""
        down = self.unreachable()
        if down is None:
            return False
        started = time.monotonic()
        delay = OUTAGE_FIRST_DELAY_S
        log.warning("job %s: %s; the unit waits for it", job_id, down)
        with self.heartbeat.waiting():
            while down is not None:
                waited = time.monotonic() - started
                if waited + delay > self.config.outage_wait_s:
                    log.error("job %s: %s for %.0f s; giving the unit up", job_id, down, waited)
                    return False
                log.warning("job %s: checking again in %.1f s", job_id, delay)
                if self.services.stopping.wait(delay):
                    return False
                delay = min(2 * delay, OUTAGE_MAX_DELAY_S)
                down = self.unreachable()
        log.warning("job %s: Postgres and Redis answer again after %.1f s; the unit runs again", job_id,
                    time.monotonic() - started)
        return True

    def close(self) -> None:
        self.heartbeat.stop()
        if self.services.batcher is not None:
            self.services.batcher.stop()
        if (beat := self.heartbeat.beat) is not None:
            try:
                worker_registry.release(self.redis, beat)
            except redis.RedisError as exc:
                log.warning("worker %s: could not release its name (%s); it expires by itself",
                            beat.name, first_line(exc))
        self.writer.close()
        self.engine.dispose()
        self.redis.close()


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
