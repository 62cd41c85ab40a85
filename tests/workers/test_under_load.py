"""Several `tokentree worker` processes under load: a big job cancelled while three workers share it (and
other jobs wait), and a soak of 100 small jobs through two workers, after which Postgres and Redis agree.
What is checked is state: jobs and nodes in Postgres (who expanded each node, and when, on the database's
clock), and the jobs' keys in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from bench.trees import by_path
from tests.workers.conftest import (
    MODEL,
    WorkerProcess,
    Workers,
    assert_no_keys_left,
    finished,
    idle_workers,
    job_keys,
    submit,
    unacked_job_ids,
    wait_for,
)
from tests.workers.trees import BIG, PROMPT, assert_follows_rule
from tokentree.engine.params import TreeParams
from tokentree.models.jobs import as_job_id
from tokentree.models.node_writes import node_totals
from tokentree.models.queues import model_queue
from tokentree.models.schema import TERMINAL_STATUSES, Job, NodeRow
from tokentree.workers.frontier import SCRIPT_KEYS

pytestmark = pytest.mark.slow

# A worker stops on a cancelled job at its next step; this is "within a few seconds" with room for a
# loaded machine. No node may be written after the cancel at all (the write checks the job's status
# under its row lock); the grace only absorbs the cancel's own statement, which may stamp its time before
# it waits for a step's row lock.
STOP_S = 5.0
WRITE_GRACE_S = 1.0
OTHER_PROMPTS = ("The secret to happiness is", "In the beginning", "The capital of France is")
SOAK_JOBS = 100
SOAK_PROMPTS = ("The capital of France is", "Once upon a time", "The secret to happiness is",
                "In the beginning", "My favourite food is")


@pytest.fixture(scope="module")
def trio(workers: Workers) -> Iterator[list[WorkerProcess]]:
    yield workers.start_many("load-1", "load-2", "load-3")


def last_writes(factory: sessionmaker[Session], job_id: str) -> dict[str, datetime]:
    """When each worker last wrote what it expanded of the job: its newest child row (on the database's
    clock, as every node's `created_at`)."""
    parent = aliased(NodeRow)
    with factory() as session:
        rows = session.execute(
            select(parent.expanded_by, func.max(NodeRow.created_at))
            .join(NodeRow, NodeRow.parent_id == parent.id)
            .where(NodeRow.job_id == as_job_id(job_id)).group_by(parent.expanded_by)
        ).all()
    return {str(worker): at for worker, at in rows}


def frontier_keys(client: redis.Redis, job_id: str) -> list[str]:
    """The job's frontier in Redis: its queue, open nodes, units' leases and the nodes they hold (not the
    sweeper's short-lived marks, which expire by themselves)."""
    return [key for key in job_keys(client, job_id) if key.rsplit(":", 1)[1] in SCRIPT_KEYS]


def test_cancel_stops_every_worker_on_a_shared_job(
    api: httpx.Client,
    trio: list[WorkerProcess],
    workers: Workers,
    session_factory: sessionmaker[Session],
    redis_client: redis.Redis,
    stop_ids: set[int],
) -> None:
    big = submit(api, PROMPT, **BIG)
    names = {w.name for w in trio}
    shared = wait_for(api, big, lambda j: set(j["progress"]["workers"]) == names or finished(j),
                      workers=workers, timeout=120)
    assert shared["status"] == "running", shared  # BIG runs for a minute at least: it must not be done
    others = [submit(api, prompt, max_nodes=150) for prompt in OTHER_PROMPTS]  # waiting behind it
    response = api.post(f"/v1/jobs/{big}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text
    deadline = time.monotonic() + STOP_S

    # Within seconds no unit holds any of it: the first to see the cancel clears its frontier, and the
    # others, their leases gone, stop before another step.
    while left := frontier_keys(redis_client, big):
        assert time.monotonic() < deadline, f"still in Redis {STOP_S} s after the cancel: {left}"
        time.sleep(0.1)
    # No worker wrote a node of it after the cancel (the cancel's time is the job's finished_at: one
    # clock with the nodes').
    with session_factory() as session:
        cancelled_at = session.scalar(select(Job.finished_at).where(Job.id == as_job_id(big)))
        at_stop = node_totals(session, big)
    assert cancelled_at is not None
    stopped = last_writes(session_factory, big)
    assert set(stopped) == names, stopped
    late = {name: (at - cancelled_at).total_seconds() for name, at in stopped.items()}
    assert all(s <= WRITE_GRACE_S for s in late.values()), f"last writes, seconds after the cancel: {late}"

    # The other jobs still run to the end, on the same workers.
    for job_id in others:
        job = wait_for(api, job_id, finished, workers=workers, timeout=120)
        assert job["status"] == "succeeded", job
    # ... and nothing more happened to the cancelled one meanwhile.
    job = api.get(f"/v1/jobs/{big}").json()
    assert job["status"] == "cancelled"
    with session_factory() as session:
        assert node_totals(session, big) == at_stop
        counts = assert_follows_rule(session, big, TreeParams(**BIG), stop_ids)
    assert last_writes(session_factory, big) == stopped
    # The partial tree stays readable, every node once.
    tree = api.get(f"/v1/jobs/{big}/tree")
    assert tree.status_code == 200
    assert len(by_path(tree.json())) == counts["nodes"] == at_stop[0] == job["progress"]["nodes"]
    assert counts["open"] > 0 and job["progress"]["frontier"] == counts["open"]  # partial: open nodes left
    assert set(job["progress"]["workers"]) == names
    assert_no_keys_left(redis_client, big)  # the short-lived marks ("sent") expire within seconds
    print(f"cancel: {at_stop[0]} nodes by {job['progress']['workers']}; last writes "
          f"{ {n: round(s, 2) for n, s in late.items()} } s after it")


def soak_parameters(index: int) -> tuple[str, dict[str, Any]]:
    return SOAK_PROMPTS[index % len(SOAK_PROMPTS)], {"max_nodes": 20 + index % 21, "max_completed_paths": 10}


def test_soak_of_100_jobs_through_two_workers(
    api: httpx.Client,
    trio: list[WorkerProcess],
    workers: Workers,
    session_factory: sessionmaker[Session],
    redis_client: redis.Redis,
    stop_ids: set[int],
) -> None:
    trio[2].stop()  # two workers from here on
    pair = {w.name for w in trio[:2]}
    started = time.monotonic()
    ids = [submit(api, prompt, **params) for prompt, params in map(soak_parameters, range(SOAK_JOBS))]
    keys = [as_job_id(i) for i in ids]
    deadline = started + 240
    while True:
        with session_factory() as session:
            statuses = dict(session.execute(
                select(Job.status, func.count()).where(Job.id.in_(keys)).group_by(Job.status)
            ).all())
        if set(statuses) <= TERMINAL_STATUSES:
            break
        assert time.monotonic() < deadline, f"soak not done in 240 s: {statuses}"
        time.sleep(0.5)
    duration = time.monotonic() - started
    assert statuses == {"succeeded": SOAK_JOBS}, statuses

    # Postgres: every job's counters, its result's statistics and its rows agree; every tree follows
    # the rule, every node once; no node belongs to no job.
    expanded_by: dict[str, int] = {}
    nodes_total = 0
    with session_factory() as session:
        for index, job_id in enumerate(ids):
            job = session.get(Job, as_job_id(job_id))
            assert job is not None and job.result is not None
            nodes, expanded, done = node_totals(session, job_id)
            assert (job.node_count, job.completed_paths) == (nodes, done), job_id
            stats = job.result["stats"]  # what the worker that finished the job counted
            assert [stats[k] for k in ("nodes", "expanded", "completed_paths")] == [nodes, expanded, done]
            _prompt, params = soak_parameters(index)
            counts = assert_follows_rule(session, job_id, TreeParams(**params), stop_ids)
            assert counts["nodes"] == nodes
            nodes_total += nodes
            for worker, count in session.execute(
                select(NodeRow.expanded_by, func.count())
                .where(NodeRow.job_id == as_job_id(job_id), NodeRow.expanded_by.is_not(None))
                .group_by(NodeRow.expanded_by)
            ):
                expanded_by[str(worker)] = expanded_by.get(str(worker), 0) + count
        orphans = select(func.count()).select_from(NodeRow).where(~NodeRow.job_id.in_(select(Job.id)))
        assert session.scalar(orphans) == 0
    assert set(expanded_by) == pair, expanded_by  # both took part
    for job_id in ids[:: SOAK_JOBS // 10]:  # and the API serves what is stored
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert len(by_path(api.get(f"/v1/jobs/{job_id}/tree").json())) == job["progress"]["nodes"]

    # Redis: nothing left of any finished job (only the short-lived "sent" and "kick" marks may linger,
    # for at most the sweeper's stale period), no lease, no message waiting nor unacknowledged, and both
    # workers idle.
    with session_factory() as session:
        ended = session.scalars(select(Job.id).where(Job.status.in_(sorted(TERMINAL_STATUSES))))
        closed = {str(i) for i in ended}
    deadline = time.monotonic() + 15
    while True:
        left = sorted(k for k in (key.decode() for key in redis_client.scan_iter("tokentree:job:*"))
                      if k.split(":")[2] in closed)
        queued = redis_client.llen(model_queue(MODEL))
        unacked = unacked_job_ids(redis_client) & set(ids)
        idle = idle_workers(redis_client) & pair
        if not left and queued == 0 and not unacked and idle == pair:
            break
        assert time.monotonic() < deadline, (
            f"left in Redis: {left[:10]} ({len(left)}), queued {queued}, unacked {unacked}, idle {idle}"
        )
        time.sleep(0.5)
    print(f"soak: {SOAK_JOBS} jobs, {nodes_total} nodes in {duration:.1f} s "
          f"({SOAK_JOBS / duration:.1f} jobs/s), expanded by {expanded_by}")
