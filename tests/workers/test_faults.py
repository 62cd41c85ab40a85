"""Faults under running `tokentree worker` processes: the broker restarted empty, the database away.

The workers of this module talk to a `redis-server` of its own (that the test kills and starts again) and to
Postgres through a TCP proxy (that the test cuts and restores); the API talks to the same Redis and to
Postgres directly, so the test can watch the job while the workers cannot reach the database. What the
tests check is state: the job's rows and counters, who expanded which node when (on the database's
clock), the job's keys in Redis, and what each worker's heartbeat says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import make_url, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from bench.trees import by_path
from tests.utils.proxy import TcpProxy
from tests.utils.redis_server import RedisServer, private_redis
from tests.utils.servers import live_api_for
from tests.workers.conftest import (
    MODEL,
    MODEL_SOURCE,
    Workers,
    assert_no_keys_left,
    finished,
    idle_workers,
    submit,
    wait_for,
)
from tests.workers.trees import PROMPT, WIDE, assert_follows_rule
from tokentree.engine.params import TreeParams
from tokentree.models import worker_registry
from tokentree.models.jobs import as_job_id
from tokentree.models.node_writes import node_totals
from tokentree.models.schema import Job, NodeRow, db_now
from tokentree.models.settings import Settings
from tokentree.workers.frontier import job_key
from tokentree.workers.runtime import OUTAGE_MAX_DELAY_S

pytestmark = pytest.mark.slow

# Wide and shallow enough to run to its natural end (no node cap): about 2,750 nodes, every path ending
# at a stop token or at max_depth. A tree that ends by itself shows a lost open node: it would be left
# open in Postgres.
WHOLE: dict[str, Any] = {**WIDE, "max_depth": 28, "max_nodes": 100_000}
DOWN_S = 4.0  # how long Redis or Postgres stays away
# New nodes within this after it is back: a unit waiting out the outage checks again at most
# OUTAGE_MAX_DELAY_S (5 s) later; the rest is room for a loaded machine.
RESUME_S = 30.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def pg_proxy(postgres_url: str) -> Iterator[TcpProxy]:
    url = make_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.restore()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def fault_settings(postgres_url: str, broker: RedisServer, pg_proxy: TcpProxy) -> Settings:
    through_proxy = make_url(postgres_url).set(host="127.0.0.1", port=pg_proxy.port)
    return Settings(database_url=through_proxy.render_as_string(hide_password=False),
                    redis_url=f"{broker.url}/0", environment="local", models={MODEL: MODEL_SOURCE})


@pytest.fixture(scope="module")
def fleet(fault_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    pool = Workers(fault_settings, tmp_path_factory.mktemp("fault-workers"))
    pool.start_many("fault-1", "fault-2")
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def fault_api(
    fault_settings: Settings, session_factory: sessionmaker[Session], fleet: Workers
) -> Iterator[httpx.Client]:
    with live_api_for(fault_settings, session_factory=session_factory) as served:
        yield served.client


def logs(fleet: Workers) -> str:
    return "\n".join(f"--- {w.name}\n{w.log()[-6000:]}" for w in fleet.started)


def nodes_now(api: httpx.Client, job_id: str) -> int:
    return int(api.get(f"/v1/jobs/{job_id}").json()["progress"]["nodes"])


def assert_whole_and_valid(
    api: httpx.Client, job_id: str, job: dict[str, Any], session_factory: sessionmaker[Session],
    stop_ids: set[int],
) -> None:
    """The job's tree ran to its end: it follows the rule node by node, no node is left open (a node lost
    from the frontier would be), every node is there once, and the job's counters match the rows."""
    tree = api.get(f"/v1/jobs/{job_id}/tree").json()
    with session_factory() as session:
        counts = assert_follows_rule(session, job_id, TreeParams(**WHOLE), stop_ids)
        nodes, expanded, completed = node_totals(session, job_id)
        row = session.execute(
            select(Job.node_count, Job.completed_paths).where(Job.id == as_job_id(job_id))
        ).one()
    assert counts["open"] == 0, counts
    assert len(by_path(tree)) == nodes == counts["nodes"] == job["progress"]["nodes"] == row.node_count
    assert completed == row.completed_paths == job["progress"]["completed_paths"]
    assert sum(job["progress"]["workers"].values()) == expanded == counts["expanded"]


def resumed_whole(
    api: httpx.Client, job_id: str, nodes_before: int, fleet: Workers, session_factory: sessionmaker[Session],
    stop_ids: set[int],
) -> tuple[dict[str, Any], float, float]:
    """After a fault ended: new nodes within RESUME_S, then success, the tree whole and valid, and every
    worker still alive. The job, and the seconds to its first new node and to its end."""
    back = time.monotonic()
    wait_for(api, job_id, lambda j: finished(j) or j["progress"]["nodes"] > nodes_before, workers=fleet,
             timeout=RESUME_S)
    resumed_s = time.monotonic() - back
    job = wait_for(api, job_id, finished, workers=fleet, timeout=90)
    done_s = time.monotonic() - back
    assert job["status"] == "succeeded", f"{job}\n{logs(fleet)}"
    assert_whole_and_valid(api, job_id, job, session_factory, stop_ids)
    assert all(w.process.poll() is None for w in fleet.started)
    return job, resumed_s, done_s


def database_clock(factory: sessionmaker[Session]) -> datetime:
    """Now, on the clock that stamps every node (`models.schema.db_now`)."""
    with factory() as session:
        return session.execute(select(db_now())).scalar_one()


def expanded_since(factory: sessionmaker[Session], job_id: str, since: datetime) -> set[str]:
    """The workers that expanded a node of the job after `since` (its children were written after it)."""
    parent = aliased(NodeRow)
    with factory() as session:
        return {str(w) for w in session.scalars(
            select(parent.expanded_by).distinct().join(NodeRow, NodeRow.parent_id == parent.id)
            .where(NodeRow.job_id == as_job_id(job_id), NodeRow.created_at > since)
        )}


def test_redis_restarted_empty_mid_job(
    fault_api: httpx.Client,
    fleet: Workers,
    broker: RedisServer,
    session_factory: sessionmaker[Session],
    stop_ids: set[int],
) -> None:
    job_id = submit(fault_api, PROMPT, **WHOLE)
    wait_for(fault_api, job_id, lambda j: j["progress"]["nodes"] >= 500, workers=fleet)
    broker.kill()  # SIGKILL: queues, frontiers, leases, idle marks all gone; every connection breaks
    killed = nodes_now(fault_api, job_id)
    time.sleep(DOWN_S)
    broker.start()  # back on the same port, empty
    restarted_at = database_clock(session_factory)
    at_start = nodes_now(fault_api, job_id)
    # Resumed from Postgres: new nodes within seconds, and the job ends (never stuck in running).
    job, resumed_s, done_s = resumed_whole(fault_api, job_id, at_start, fleet, session_factory, stop_ids)
    # Both workers reconnected: both expanded nodes after the restart, and both say they idle in the new
    # Redis.
    assert expanded_since(session_factory, job_id, restarted_at) == {w.name for w in fleet.started}
    client = redis.Redis.from_url(f"{broker.url}/0")
    try:
        assert_no_keys_left(client, job_id)
        deadline = time.monotonic() + 10
        while idle_workers(client) != {w.name for w in fleet.started}:
            assert time.monotonic() < deadline, f"idle in the new Redis: {idle_workers(client)}"
            time.sleep(0.25)
    finally:
        client.close()
    print(f"redis restart: killed at {killed} nodes, down {DOWN_S} s, new nodes {resumed_s:.1f} s after it "
          f"was back ({at_start} then), done {done_s:.1f} s after: {job['progress']}")


def worker_states(client: redis.Redis, fleet: Workers) -> dict[str, str]:
    """What each worker's heartbeat key says it is doing (models/worker_registry.py)."""
    beats = {w.name: worker_registry.holder_of(client, w.name) for w in fleet.started}
    return {name: beat.state if beat else "gone" for name, beat in beats.items()}


def test_postgres_away_under_running_workers(
    fault_api: httpx.Client,
    fleet: Workers,
    broker: RedisServer,
    pg_proxy: TcpProxy,
    session_factory: sessionmaker[Session],
    stop_ids: set[int],
) -> None:
    job_id = submit(fault_api, PROMPT, **WHOLE)
    wait_for(fault_api, job_id, lambda j: j["progress"]["nodes"] >= 500, workers=fleet)
    client = redis.Redis.from_url(f"{broker.url}/0")
    pg_proxy.cut()  # the workers' connections break and new ones are refused; the API still reads
    cut = time.monotonic()
    time.sleep(0.5)  # a write in flight through the proxy when it was cut may have committed
    seen = fault_api.get(f"/v1/jobs/{job_id}").json()
    waiting: set[str] = set()
    try:
        while time.monotonic() - cut < DOWN_S:
            time.sleep(0.25)
            job = fault_api.get(f"/v1/jobs/{job_id}").json()
            # The proxy is really cut (nothing is written), and the job is not given up on meanwhile.
            assert (job["status"], job["progress"]["nodes"]) == ("running", seen["progress"]["nodes"]), job
            waiting |= {name for name, state in worker_states(client, fleet).items() if state == "waiting"}
        # The units that met the outage wait for the database (their workers' heartbeats say so), rather
        # than failing the job or being dropped.
        assert waiting, f"no worker waited for Postgres: {worker_states(client, fleet)}\n{logs(fleet)}"
        pg_proxy.restore()
        restored_at = database_clock(session_factory)
        job, resumed_s, done_s = resumed_whole(fault_api, job_id, seen["progress"]["nodes"], fleet,
                                               session_factory, stop_ids)
        # ... and they ran again once it answered: the workers that waited expanded nodes after it was back.
        assert waiting <= expanded_since(session_factory, job_id, restored_at), logs(fleet)
        # A unit still waiting when another unit (sent by the sweeper for the nodes it gave back) finished
        # the job runs again at its next check, at most OUTAGE_MAX_DELAY_S later: no worker still waits.
        deadline = time.monotonic() + 2 * OUTAGE_MAX_DELAY_S
        while "waiting" in (states := worker_states(client, fleet)).values():
            assert time.monotonic() < deadline, f"{states}\n{logs(fleet)}"
            time.sleep(0.25)
    finally:
        client.close()
    print(f"postgres away: {DOWN_S} s at {seen['progress']['nodes']} nodes; {sorted(waiting)} waited; new "
          f"nodes {resumed_s:.1f} s after it was back, done {done_s:.1f} s after: {job['progress']}")


def test_connections_broken_again_and_again_do_not_fail_the_job(
    fault_api: httpx.Client,
    fleet: Workers,
    broker: RedisServer,
    pg_proxy: TcpProxy,
    session_factory: sessionmaker[Session],
    stop_ids: set[int],
) -> None:
    # Each cut breaks the units' connections mid-step, and the database answers again at once. Were a
    # broken connection counted as an attempt on the nodes held (as a crash is), the third would fail the
    # job as a poison node; none may even be counted (the job's `attempts` hash in Redis stays empty).
    job_id = submit(fault_api, PROMPT, **WHOLE)
    wait_for(fault_api, job_id, lambda j: j["progress"]["nodes"] >= 300, workers=fleet)
    client = redis.Redis.from_url(f"{broker.url}/0")
    attempts: dict[bytes, bytes] = {}

    def watch_attempts(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            attempts.update(client.hgetall(job_key(job_id, "attempts")))
            time.sleep(0.05)

    try:
        blips, reconnected = 0, []
        while blips < 6 and not finished(fault_api.get(f"/v1/jobs/{job_id}").json()):
            accepted = pg_proxy.accepted
            pg_proxy.cut()
            time.sleep(0.05)
            pg_proxy.restore()
            blips += 1
            watch_attempts(0.65)
            reconnected.append(pg_proxy.accepted - accepted)
        deadline = time.monotonic() + 90
        while not finished(job := fault_api.get(f"/v1/jobs/{job_id}").json()):
            assert time.monotonic() < deadline, f"job {job_id} did not end in 90 s: {job}\n{logs(fleet)}"
            watch_attempts(0.25)
    finally:
        client.close()
    assert job["status"] == "succeeded", f"{job}\n{logs(fleet)}"
    assert blips >= 3, "the job ended before the connections were broken three times"
    # The cuts broke connections the workers were using: they connected again after each of the first
    # three (the job surely ran then).
    assert all(reconnected[:3]), reconnected
    assert attempts == {}, f"attempts counted on nodes: {attempts}\n{logs(fleet)}"
    assert_whole_and_valid(fault_api, job_id, job, session_factory, stop_ids)
    print(f"connections broken {blips} times, connections made again after each: {reconnected}; "
          f"{job['progress']}")
