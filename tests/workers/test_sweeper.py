"""The sweeper, in process, against the real Postgres and Redis: takeovers, poison nodes, lost messages."""

from __future__ import annotations

import time
import uuid

import redis
from sqlalchemy.orm import Session, sessionmaker

from engine.params import TreeParams
from models import jobs
from models.node_writes import open_node_ids, start_tree
from models.settings import Settings
from workers.frontier import RedisFrontier, job_key
from workers.service import JOB_NODE, ModelRegistry, Services
from workers.settings import WorkerSettings
from workers.sweeper import Sweeper

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


def crash_holding(sweeper: Sweeper, job_id: str, node: int, unit: str) -> None:
    """A unit leases `node` and dies (its lease runs out); then a sweep (its last kick forgotten)."""
    assert sweeper.frontier.lease(job_id, unit, 1, ttl_s=0.05).node_ids == [node]
    assert sweeper.frontier.lease(job_id, "duplicate", 1, ttl_s=5).node_ids == []  # held: nobody else gets it
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
