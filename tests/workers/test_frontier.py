"""The frontier's operations against a real Redis (and the in-memory one where it behaves the same)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tokentree.workers.frontier import (
    Committed,
    Frontier,
    FrontierCommit,
    HeldLease,
    MemoryFrontier,
    RedisFrontier,
    Snapshot,
)


def commit(frontier: Frontier, job: str, unit: str, **step: Any) -> Committed:
    """One step committed to the frontier (a lease of 5 s)."""
    return frontier.commit([FrontierCommit(job, unit, ttl_s=5, **step)])[0]


@pytest.fixture
def job() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def rfrontier(redis_client: redis.Redis) -> Iterator[RedisFrontier]:
    yield RedisFrontier(redis_client)


@pytest.fixture(params=["redis", "memory"])
def frontier(request: pytest.FixtureRequest) -> Frontier:
    if request.param == "memory":
        return MemoryFrontier()
    return request.getfixturevalue("rfrontier")


def test_lease_commit_release_keep_every_open_node_somewhere(frontier: Frontier, job: str) -> None:
    frontier.load(job, [1, 2, 3])
    assert frontier.ready(job)
    leased = frontier.lease(job, "u1", 2, ttl_s=5)
    assert (leased.node_ids, leased.open_count) == ([1, 2], 3)
    # u1 expands 1 (children 4, 5) and finishes 2; |Q| counts held and queued nodes alike.
    committed = commit(frontier, job, "u1", popped=[1, 2], children=[4, 5], recovered=[])
    assert (committed.open_count, committed.alive) == (3, True)
    assert committed.not_held == []
    # Another unit gets only what nobody holds.
    assert frontier.lease(job, "u2", 10, ttl_s=5).node_ids == [3]
    frontier.release(job, "u1", [5, 4], end_unit=True)  # given back in the order given
    leased = frontier.lease(job, "u3", 10, ttl_s=5)
    assert (leased.node_ids, leased.open_count) == ([5, 4], 3)
    assert frontier.lease(job, "u4", 10, ttl_s=5).node_ids == []  # the queue is empty


def test_a_node_done_twice_is_counted_once(frontier: Frontier, job: str) -> None:
    """A redelivered commit: popping and adding the same nodes again changes nothing."""
    frontier.load(job, [1])
    frontier.lease(job, "u1", 1, ttl_s=5)
    for _ in range(2):
        committed = commit(frontier, job, "u1", popped=[1], children=[2, 3], recovered=[])
        assert committed.open_count == 2
    # Recovered children (found written in Postgres) are queued once, and not if already open.
    committed = commit(frontier, job, "u1", popped=[], children=[], recovered=[3, 4, 4])
    assert committed.open_count == 3
    assert frontier.lease(job, "u2", 10, ttl_s=5).node_ids == [4]


def test_stale_queue_entries_are_skipped(frontier: Frontier, job: str) -> None:
    frontier.load(job, [1, 2])
    frontier.lease(job, "u1", 1, ttl_s=5)
    commit(frontier, job, "u1", popped=[1], children=[], recovered=[])
    frontier.release(job, "u1", [1])  # already popped: not requeued
    assert frontier.lease(job, "u2", 5, ttl_s=5).node_ids == [2]


def test_ending_a_unit_gives_back_everything_it_holds(frontier: Frontier, job: str) -> None:
    frontier.load(job, [1, 2, 3])
    frontier.lease(job, "u1", 3, ttl_s=5)
    attempts = frontier.release(job, "u1", [2], end_unit=True, failed=True)
    assert attempts == 1
    assert frontier.lease(job, "u2", 5, ttl_s=5).node_ids == [2, 1, 3]


def test_a_dead_units_nodes_go_back_to_the_head_with_an_attempt(rfrontier: RedisFrontier, job: str) -> None:
    rfrontier.load(job, [1, 2, 3, 4])
    rfrontier.lease(job, "dead", 2, ttl_s=0.2)
    rfrontier.lease(job, "alive", 1, ttl_s=30)
    assert rfrontier.expire(job, max_attempts=3).requeued == []  # not yet expired
    time.sleep(0.3)
    expired = rfrontier.expire(job, max_attempts=3)
    assert expired.requeued == [1, 2] and expired.poisoned == {} and expired.live_units == 1
    assert rfrontier.renew([HeldLease(job, "dead")], 5) == [False]  # it learns it lost its lease
    assert rfrontier.lease(job, "next", 10, ttl_s=5).node_ids == [1, 2, 4]  # oldest first, then the rest


def test_a_node_that_outlives_its_workers_is_poison(rfrontier: RedisFrontier, job: str) -> None:
    rfrontier.load(job, [7])
    for attempt in (1, 2, 3):
        assert rfrontier.lease(job, f"crash-{attempt}", 1, ttl_s=0.05).node_ids == [7]
        rfrontier.mark_in_flight(job, f"crash-{attempt}", [7])  # the worker dies stepping it
        time.sleep(0.1)
        expired = rfrontier.expire(job, max_attempts=3)
        assert expired.requeued == [7]
    assert expired.poisoned == {7: 3}


def test_a_unit_whose_lease_expired_holds_nothing_it_creates(rfrontier: RedisFrontier, job: str) -> None:
    rfrontier.load(job, [1])
    rfrontier.lease(job, "slow", 1, ttl_s=0.05)
    time.sleep(0.1)
    rfrontier.expire(job, max_attempts=3)
    # Its write went through (Postgres had the node still open): its children must not be orphaned.
    committed = commit(rfrontier, job, "slow", popped=[1], children=[2, 3], recovered=[])
    assert not committed.alive and committed.not_held == [2, 3]
    assert rfrontier.lease(job, "other", 10, ttl_s=5).node_ids == [2, 3]


def test_a_commit_marks_in_flight_the_children_its_unit_steps_next(
    rfrontier: RedisFrontier, redis_client: redis.Redis, job: str
) -> None:
    rfrontier.load(job, [1])
    rfrontier.lease(job, "u", 1, ttl_s=0.2)
    rfrontier.mark_in_flight(job, "u", [1])
    rfrontier.commit([FrontierCommit(job, "u", [1], [2, 3, 4], [], ttl_s=0.2, children_in_flight=2)])
    # The popped node's step is done; the unit's next step runs on 2 and 3 (before they had ids).
    assert redis_client.hgetall(f"tokentree:job:{job}:in_flight") == {b"2": b"u", b"3": b"u"}
    time.sleep(0.25)  # the unit dies
    expired = rfrontier.expire(job, max_attempts=1)
    assert expired.requeued == [2, 3, 4] and expired.poisoned == {2: 1, 3: 1}


def test_idle_peers_come_back_with_a_commit(
    rfrontier: RedisFrontier, redis_client: redis.Redis, job: str
) -> None:
    rfrontier.load(job, [1])
    rfrontier.lease(job, "u", 1, ttl_s=5)
    redis_client.zadd("tokentree:model:m-test:idle", {"peer": int(time.time() * 1000)})
    committed = commit(rfrontier, job, "u", popped=[], children=[], recovered=[], model="m-test")
    assert committed.idle_peers == 1
    rfrontier.clear(job)
    assert not rfrontier.ready(job)


def test_the_sweeper_sees_live_and_expired_units(rfrontier: RedisFrontier, job: str) -> None:
    assert rfrontier.snapshot([job])[0] == Snapshot(ready=False, units=0, expired_units=0)
    rfrontier.load(job, [1, 2])
    rfrontier.lease(job, "dies", 1, ttl_s=0.05)
    rfrontier.lease(job, "lives", 1, ttl_s=30)
    time.sleep(0.1)
    assert rfrontier.snapshot([job])[0] == Snapshot(ready=True, units=2, expired_units=1)
