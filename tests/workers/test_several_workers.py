"""Several `tokentree worker` processes: they share a big job, a killed worker's nodes are taken over
within seconds, and a job whose message was lost still runs."""

from __future__ import annotations

import time

import httpx
import redis
from sqlalchemy.orm import Session, sessionmaker

from tests.workers.conftest import MODEL, Workers, finished, submit, wait_for
from tests.workers.trees import PROMPT, WIDE, assert_follows_rule
from tokentree.engine.params import TreeParams


def test_two_workers_share_a_big_job(
    api: httpx.Client, workers: Workers, session_factory: sessionmaker[Session], stop_ids: set[int]
) -> None:
    workers.start("pair-1")
    workers.start("pair-2")
    job_id = submit(api, PROMPT, **WIDE)
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    expanded = job["progress"]["workers"]
    assert set(expanded) == {"pair-1", "pair-2"}, expanded
    assert min(expanded.values()) >= 100, expanded  # both did a real share, not a token node or two
    with session_factory() as session:
        counts = assert_follows_rule(session, job_id, TreeParams(**WIDE), stop_ids)
    assert counts["nodes"] == job["progress"]["nodes"] == WIDE["max_nodes"]
    assert sum(expanded.values()) == counts["expanded"]
    workers.stop_all()


def test_a_killed_workers_nodes_are_taken_over(
    api: httpx.Client, workers: Workers, session_factory: sessionmaker[Session], stop_ids: set[int]
) -> None:
    doomed = workers.start("doomed")
    job_id = submit(api, PROMPT, **WIDE)
    wait_for(api, job_id, lambda j: j["progress"]["nodes"] >= 300, workers=workers)
    doomed.kill()  # SIGKILL mid-job: its unit's message stays unacknowledged, its nodes stay leased
    partial = api.get(f"/v1/jobs/{job_id}").json()
    assert partial["status"] == "running"
    heir = workers.start("heir")
    started = time.monotonic()
    job = wait_for(api, job_id, finished, workers=workers, timeout=180)
    assert job["status"] == "succeeded", job
    # Taken over within seconds (lease 3 s), not after the broker's visibility timeout (10 minutes).
    assert time.monotonic() - started < 60
    assert set(job["progress"]["workers"]) == {"doomed", "heir"}
    with session_factory() as session:
        counts = assert_follows_rule(session, job_id, TreeParams(**WIDE), stop_ids)
    assert counts["nodes"] == WIDE["max_nodes"]
    heir.stop()


def test_a_lost_message_does_not_leave_the_job_queued(
    api: httpx.Client, workers: Workers, redis_client: redis.Redis
) -> None:
    job_id = submit(api, PROMPT, max_nodes=100)  # no worker runs: the message waits in Redis
    queue = f"tokentree.model.{MODEL}"
    assert redis_client.llen(queue) == 1
    redis_client.delete(queue)  # and now it is lost
    workers.start("finder")
    job = wait_for(api, job_id, finished, workers=workers, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["progress"]["nodes"] == 100
