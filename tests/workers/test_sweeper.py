"""The sweeper, in process, against the real Postgres and Redis: takeovers, poison nodes, lost messages,
and a worker whose clock is off."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, tzinfo

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.workers.conftest import MODEL as DEMO
from tests.workers.trees import PROMPT, WIDE
from tokentree.engine.params import TreeParams
from tokentree.models import jobs, worker_registry
from tokentree.models.node_writes import Expansion, Limits, NewChild, open_node_ids, start_tree, write_step
from tokentree.models.queues import worker_queue
from tokentree.models.schema import NodeRow
from tokentree.models.settings import Settings
from tokentree.models.worker_registry import WorkerBeat
from tokentree.workers.frontier import FrontierCommit, RedisFrontier, idle_key, job_key
from tokentree.workers.held import HeldTree, Step
from tokentree.workers.runtime import WorkerRuntime
from tokentree.workers.service import JOB_NODE, ModelRegistry, Services
from tokentree.workers.settings import WorkerSettings
from tokentree.workers.sweeper import Sweeper
from tokentree.workers.tree_jobs import run_tree_unit

MODEL = "demo-sweep"  # a model no worker process serves: nothing but this test touches its jobs


def make_sweeper(
    settings: Settings, factory: sessionmaker[Session], client: redis.Redis, sent: list[str]
) -> Sweeper:
    frontier = RedisFrontier(client)
    services = Services(
        config=WorkerSettings(name="sweeper-test", max_attempts=3),
        max_batch=settings.max_batch,
        session_factory=factory,
        frontier=frontier,
        models=ModelRegistry(settings),
    )
    return Sweeper(
        services,
        frontier,
        [MODEL],
        lambda job_id, model: sent.append(job_id),
        interval_s=0.01,
        stale_after_s=0.5,
    )


def running_job(factory: sessionmaker[Session], frontier: RedisFrontier) -> tuple[str, int]:
    with factory() as session:
        job = jobs.create_job(
            session, kind="tree", prompt="p", model=MODEL, parameters=TreeParams().to_dict()
        )
        start = start_tree(session, job.id, "p")
        assert start is not None and start.root is not None
        frontier.load(str(job.id), open_node_ids(session, job.id))
    return str(job.id), start.root.id


def sweep(sweeper: Sweeper) -> None:
    time.sleep(0.02)  # past the sweep lock of the previous round
    sweeper.sweep()


def crash_holding(sweeper: Sweeper, job_id: str, node: int, unit: str, in_flight: bool = True) -> None:
    """A unit leases `node`, starts a step on it (unless not `in_flight`: it merely holds it) and dies (its
    lease runs out); then a sweep (its last kick forgotten)."""
    assert sweeper.frontier.lease(job_id, unit, 1, ttl_s=0.05).node_ids == [node]
    assert sweeper.frontier.lease(job_id, "duplicate", 1, ttl_s=5).node_ids == []  # held: nobody else gets it
    if in_flight:
        sweeper.frontier.mark_in_flight(job_id, unit, [node])
    time.sleep(0.1)
    sweeper.redis.delete(job_key(job_id, "kick"))
    sweep(sweeper)


def test_a_dead_units_nodes_are_requeued_and_a_unit_sent(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    sent: list[str] = []
    sweeper = make_sweeper(settings, session_factory, redis_client, sent)
    frontier = RedisFrontier(redis_client)
    job_id, root = running_job(session_factory, frontier)
    assert frontier.lease(job_id, "dies", 1, ttl_s=0.1).node_ids == [root]
    sweep(sweeper)
    assert sent == []  # a live unit holds the job
    time.sleep(0.15)
    sweep(sweeper)
    assert sent == [job_id]
    assert frontier.lease(job_id, "next", 10, ttl_s=5).node_ids == [root]  # back in the queue


def test_a_node_that_kills_every_worker_fails_its_job(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    sent: list[str] = []
    sweeper = make_sweeper(settings, session_factory, redis_client, sent)
    frontier = RedisFrontier(redis_client)
    job_id, root = running_job(session_factory, frontier)
    for attempt in range(3):
        crash_holding(sweeper, job_id, root, f"crash-{attempt}")
    with session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.status == "failed"
        assert job.error is not None and f"node {root}" in job.error and "3" in job.error
    assert not frontier.ready(job_id)  # nothing left behind


def test_a_logprobs_job_is_taken_back_like_a_node_and_fails_at_the_limit(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    """A logprobs job runs as one piece: its frontier is one node, leased, taken back and counted alike."""
    sent: list[str] = []
    sweeper = make_sweeper(settings, session_factory, redis_client, sent)
    with session_factory() as session:
        job_id = str(jobs.create_job(session, kind="logprobs", prompt="p", model=MODEL, parameters={}).id)
        assert jobs.mark_running(session, job_id, "a-worker")
    assert sweeper.s.open_frontier(job_id, "first", lambda: [JOB_NODE]) is None
    for attempt in range(3):
        crash_holding(sweeper, job_id, JOB_NODE, f"crash-{attempt}")
        assert sent.count(job_id) == min(attempt + 1, 2)  # sent again after each death but the last
    with session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.status == "failed"
        assert job.error is not None and job.error.startswith("the job was taken back from 3 workers")
    assert not sweeper.frontier.ready(job_id)


def test_a_job_nobody_works_on_gets_a_unit_but_not_a_flood(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    sent: list[str] = []
    sweeper = make_sweeper(settings, session_factory, redis_client, sent)
    with session_factory() as session:
        queued = str(jobs.create_job(session, kind="tree", prompt="p", model=MODEL, parameters={}).id)
    sweep(sweeper)
    assert queued not in sent  # young: its first message may still be on its way
    time.sleep(0.6)
    for _ in range(5):
        sweep(sweeper)
    assert sent.count(queued) == 1  # one kick per stale period, not one per sweep
    assert uuid.UUID(queued)


def attempts(client: redis.Redis, job_id: str) -> dict[int, int]:
    return {int(node): int(n) for node, n in client.hgetall(job_key(job_id, "attempts")).items()}


def test_units_that_die_with_nothing_in_flight_count_no_attempt(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    """Workers killed for reasons of their own (a deploy, a kill elsewhere) while their units merely held
    the job's node: it goes back to the queue uncounted each time, and the job lives on."""
    sent: list[str] = []
    sweeper = make_sweeper(settings, session_factory, redis_client, sent)
    job_id, root = running_job(session_factory, sweeper.frontier)
    for attempt in range(4):  # more deaths than max_attempts (3)
        crash_holding(sweeper, job_id, root, f"killed-{attempt}", in_flight=False)
    with session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.status == "running"
    assert attempts(redis_client, job_id) == {}
    assert sent.count(job_id) >= 1  # a unit was sent for it
    assert sweeper.frontier.lease(job_id, "next", 10, ttl_s=5).node_ids == [root]  # back in the queue


def test_a_unit_that_dies_counts_an_attempt_on_its_node_in_flight_only(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    sent: list[str] = []
    sweeper = make_sweeper(settings, session_factory, redis_client, sent)
    frontier = sweeper.frontier
    job_id, root = running_job(session_factory, frontier)
    held = [root, root + 1, root + 2]  # the frontier knows ids only
    frontier.load(job_id, held)
    assert frontier.lease(job_id, "dies", 3, ttl_s=0.05).node_ids == held
    frontier.mark_in_flight(job_id, "dies", [root + 1])  # the model runs on this one when the worker dies
    time.sleep(0.1)
    sweep(sweeper)
    assert attempts(redis_client, job_id) == {root + 1: 1}
    assert sent == [job_id]
    assert frontier.lease(job_id, "next", 10, ttl_s=5).node_ids == held  # all back, oldest first
    assert redis_client.hgetall(job_key(job_id, "in_flight")) == {}  # nothing marked for the next unit


class _AnHourBehind(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:
        return datetime.now(tz) - timedelta(hours=1)


def put_clock_an_hour_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's wall clock (a worker's) an hour behind the database's and Redis': the fault injected
    is the clock, so the clock is what is patched, both ways Python reads it."""
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() - 3600)
    monkeypatch.setattr("tokentree.models.schema.datetime", _AnHourBehind)


def test_a_worker_whose_clock_is_an_hour_behind_resends_a_lost_message_and_dates_nothing_early(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []
    sweeper = make_sweeper(settings, session_factory, redis_client, sent)
    with session_factory() as session:  # the API, whose clock is right
        job_id = str(jobs.create_job(session, kind="tree", prompt="p", model=MODEL,
                                     parameters=TreeParams().to_dict()).id)
    put_clock_an_hour_behind(monkeypatch)  # the workers'; the job's message is lost
    began = time.monotonic()
    while job_id not in sent:  # sent again once stale (0.5 s): before, a job looked an hour young
        assert time.monotonic() - began < 5, "the sweeper never sent a unit for the job"
        sweep(sweeper)
    with session_factory() as session:  # a worker starts it, expands its root and finishes it
        start = start_tree(session, job_id, "p")
        assert start is not None and start.root is not None
        expanded = Expansion(node_id=start.root.id, depth=0, candidates_json="[]", threshold=0.2,
                             queue_depth=1, entropy=None, children=[NewChild(7, "a", 0.5, -0.7, 0.5)])
        assert write_step(session, job_id, [expanded], Limits(100, 100), "behind").running
        assert jobs.finish_job(session, job_id, "succeeded")
        job = jobs.get_job(session, job_id)
        made = session.scalars(select(NodeRow.created_at).where(NodeRow.job_id == job.id)).all()
    assert job is not None and job.started_at is not None and job.finished_at is not None
    assert job.created_at <= job.started_at <= min(made) <= max(made) <= job.finished_at
    assert job.finished_at - job.created_at < timedelta(minutes=1)


def test_a_worker_whose_clock_is_an_hour_behind_is_seen_alive_and_idle(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its beats and idle marks are stamped with Redis' clock, which their readers compare them with."""
    handed: list[str] = []
    runtime = WorkerRuntime(settings.model_copy(update={"models": {MODEL: "demo"}}),
                            WorkerSettings(name="behind"), send=lambda job_id, queue: handed.append(queue))
    on_time = WorkerBeat(name="on-time", models=(MODEL,))
    frontier, job_id = RedisFrontier(redis_client), str(uuid.uuid4())
    worker_registry.claim(redis_client, on_time, ttl_s=30)
    put_clock_an_hour_behind(monkeypatch)
    try:
        runtime.heartbeat.beat = WorkerBeat(name="behind", models=(MODEL,))
        worker_registry.claim(redis_client, runtime.heartbeat.beat, ttl_s=30)
        runtime.heartbeat.beat_presence("idle")
        # A peer beats after it, on its right clock (a beat's default time is read off the real one).
        assert worker_registry.renew(redis_client, WorkerBeat("on-time", (MODEL,), token=on_time.token), 30)
        assert {"behind", "on-time"} <= {beat.name for beat in worker_registry.live_workers(redis_client)}
        runtime.ready = True
        runtime.heartbeat.refresh_idle()
        # A unit of the peer commits a step: it finds this worker idle, to hand it work.
        frontier.load(job_id, [1], held_by="on-time:u", ttl_s=5)
        done = frontier.commit([FrontierCommit(job_id, "on-time:u", [], [], [], ttl_s=5, model=MODEL)])[0]
        assert done.idle_peers == 1
        # It hands work to a peer idle now, never to one that stopped 10 s ago.
        seconds, micros = redis_client.time()
        now_ms = seconds * 1000 + micros // 1000
        redis_client.zadd(idle_key(MODEL), {"on-time": now_ms, "gone": now_ms - 10_000})
        runtime.hand_to_peers(job_id, MODEL, 2)
        assert handed == [worker_queue("on-time")]
    finally:
        frontier.clear(job_id)
        redis_client.delete(idle_key(MODEL), job_key(job_id, "sent"))
        worker_registry.release(redis_client, on_time)
        runtime.close()


class _Killed(BaseException):
    """The worker process dying under a unit (nothing of the unit runs after it)."""


def test_a_tree_unit_killed_mid_step_counts_an_attempt_on_the_nodes_its_model_ran_on_only(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frontier = RedisFrontier(redis_client)
    services = Services(config=WorkerSettings(name="killed", lease_ttl_s=1.0), max_batch=2,
                        session_factory=session_factory, frontier=frontier, models=ModelRegistry(settings))
    with session_factory() as session:  # never sent: nothing but this test runs it
        job = jobs.create_job(session, kind="tree", prompt=PROMPT, model=DEMO, parameters=WIDE)
    stepped: list[int | None] = []

    def step(held: HeldTree, max_batch: int, external: int) -> Step:
        batch = held.next_batch(max_batch)
        if None in batch and len(held) > len(batch):
            # The worker dies while its model runs on children of the step being written, holding more.
            stepped.extend(batch)
            raise _Killed
        return real_step(held, max_batch, external)

    real_step = HeldTree.step
    monkeypatch.setattr(HeldTree, "step", step)
    monkeypatch.setattr(RedisFrontier, "release", lambda *args, **kwargs: 0)  # the dead give nothing back
    with pytest.raises(_Killed):
        run_tree_unit(services, job)
    time.sleep(1.1)  # its lease runs out
    expired = frontier.expire(str(job.id), max_attempts=3)
    counted = attempts(redis_client, str(job.id))
    # Exactly the nodes of the step in flight, once each (those with no id yet were marked when their
    # parents' step was committed); the other nodes it held went back uncounted.
    assert len(counted) == len(stepped) and set(counted.values()) == {1}
    assert {i for i in stepped if i is not None} <= set(counted) < set(expired.requeued)
    with session_factory() as session:
        jobs.cancel_job(session, job.id)
    frontier.clear(str(job.id))
