"""What readers cost the API, against the real service: event streams share one reading of the database
per interval however many are open, and tree renders are capped per caller and in all (429 beyond), each
document rendered once however many ask for it at the same moment, a kept one served without a slot."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, text

from bench.factories import insert_tree, synthetic_tree
from tests.reliability.conftest import bearer, new_token, service_settings
from tests.utils.servers import LiveAPI, live_api_for
from tokentree.models import jobs
from tokentree.models.db import api_engine, make_session_factory
from tokentree.models.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]
REQUEST = {"prompt": "The capital of India is", "parameters": {"max_nodes": 500}}
Event = tuple[str, dict[str, Any]]


@contextmanager
def counted_api(settings: Settings) -> Iterator[tuple[LiveAPI, list[tuple[float, str]]]]:
    """The API on an engine of its own, and every statement it sends: (when, SQL)."""
    engine = api_engine(settings)
    statements: list[tuple[float, str]] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append((time.monotonic(), statement))

    event.listen(engine, "before_cursor_execute", count)
    try:
        with live_api_for(settings, session_factory=make_session_factory(engine)) as api:
            yield api, statements
    finally:
        engine.dispose()


def submit(api: LiveAPI, token: str) -> str:
    response = api.client.post("/v1/jobs", json=REQUEST, headers=bearer(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- event streams ----------------------------------------------------------------------------------------


def watch(url: str, job_id: str, token: str, first: threading.Event, events: list[Event]) -> None:
    """Read one job's event stream until its `end` (or `error`)."""
    with httpx.Client(base_url=url, timeout=60) as client, \
            client.stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(token)) as response:
        assert response.status_code == 200, response.read()
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                first.set()
                if name in ("end", "error"):
                    return


def statements_in(statements: list[tuple[float, str]], seconds: float) -> int:
    """How many statements the API sends in the next `seconds`."""
    started = time.monotonic()
    time.sleep(seconds)
    return sum(started <= at < started + seconds for at, _ in statements)


def test_event_streams_share_one_reading_per_interval(clean_pg: Engine, postgres_url: str, redis_url: str
                                                      ) -> None:
    """One stream or eight (on eight jobs of two keys), the database is read the same number of times per
    interval; and every stream still sees its job's progress, then its end."""
    _, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    interval, window = 0.25, 3.0
    # events_max_s: should an assertion fail, the streams still end by themselves.
    settings = service_settings(postgres_url, redis_url, require_api_key=True, events_interval_s=interval,
                                events_max_s=30)
    with counted_api(settings) as (api, statements), ThreadPoolExecutor(max_workers=8) as pool:
        tokens = [alice, bob] * 4
        job_ids = [submit(api, token) for token in tokens]
        firsts = [threading.Event() for _ in job_ids]
        streams: list[list[Event]] = [[] for _ in job_ids]
        readers: list[Future[None]] = []

        def open_streams(indices: range) -> None:
            for i in indices:
                readers.append(pool.submit(watch, api.url, job_ids[i], tokens[i], firsts[i], streams[i]))
            for i in indices:
                assert firsts[i].wait(10), f"stream {i} got no first event"
            time.sleep(2 * interval)  # the readings a new stream asks for are done

        open_streams(range(1))
        one = statements_in(statements, window)
        open_streams(range(1, 8))
        eight = statements_in(statements, window)
        print(f"\nstatements in {window} s, {interval} s interval: {one} with 1 stream, {eight} with 8")
        assert one > 0
        # Before the feed, each stream read on its own: eight streams sent 8 times as many (3 each).
        assert eight <= 1.5 * one + 3, (one, eight)

        with make_session_factory(clean_pg)() as session:
            for i, job_id in enumerate(job_ids):
                jobs.mark_running(session, job_id, "test-worker")
                insert_tree(session, uuid.UUID(job_id), synthetic_tree(10 + i, seed=i))
        time.sleep(3 * interval)
        with make_session_factory(clean_pg)() as session:
            for job_id in job_ids:
                assert jobs.finish_job(session, job_id, "succeeded")
        for reader in readers:
            reader.result(timeout=30)
    for i, events in enumerate(streams):
        names = [name for name, _ in events]
        assert names[0] == "progress" and names[-1] == "end" and names.count("end") == 1, (i, names)
        assert all(body["id"] == job_ids[i] for _, body in events)
        assert {"queued", "running"} <= {body["status"] for name, body in events if name == "progress"}, i
        assert events[-1][1]["status"] == "succeeded" and events[-1][1]["progress"]["nodes"] == 10 + i


# -- tree renders -----------------------------------------------------------------------------------------


def waiting_on_nodes(engine: Engine) -> int:
    """The API's statements waiting for the lock on `nodes` (renders in progress)."""
    with engine.connect() as connection:
        return int(connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE '%nodes%'")) or 0)


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_tree_renders_are_capped_per_caller_and_each_done_once(
    clean_pg: Engine, postgres_url: str, redis_url: str
) -> None:
    """Renders are held in Postgres (a test's lock on `nodes`) so they overlap for certain: alice's third
    render is a 429 while bob is still served; five requests for one running job's tree render it once
    and take one slot; a kept tree is served while every slot is taken; a full server refuses carol."""
    _, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    _, carol = new_token(clean_pg, "carol")
    settings = service_settings(postgres_url, redis_url, require_api_key=True, renders_max_per_caller=2,
                                renders_max_total=3, db_lock_timeout_s=60)
    with counted_api(settings) as (api, statements), ThreadPoolExecutor(max_workers=8) as pool:
        finished, running = {}, {}
        with make_session_factory(clean_pg)() as session:
            for name, token in (("alice", alice), ("bob", bob), ("carol", carol)):
                finished[name] = submit(api, token)
                insert_tree(session, uuid.UUID(finished[name]), synthetic_tree(300, seed=1))
                jobs.mark_running(session, finished[name], "test-worker")
                assert jobs.finish_job(session, finished[name], "succeeded")
            running["bob"] = submit(api, bob)
            insert_tree(session, uuid.UUID(running["bob"]), synthetic_tree(300, seed=2))
            jobs.mark_running(session, running["bob"], "test-worker")

        def tree(job_id: str, token: str, timeout: float = 60, **query: int) -> httpx.Response:
            return api.client.get(f"/v1/jobs/{job_id}/tree", params=query, headers=bearer(token),
                                  timeout=timeout)

        kept = tree(finished["bob"], bob)
        assert kept.status_code == 200

        def renders() -> int:
            return sum("nodes.candidates" in sql for _, sql in statements)

        before = renders()
        with clean_pg.connect() as holder:
            lock = holder.begin()
            try:
                holder.execute(text("LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE"))
                alices = [pool.submit(tree, finished["alice"], alice, max_depth=depth) for depth in (1, 2)]
                wait_for(lambda: waiting_on_nodes(clean_pg) == 2, "alice's two renders under way")
                # Alice's third render: refused at once (5 s would be a render waiting for the lock).
                refused = tree(finished["alice"], alice, timeout=5, max_depth=3)
                assert refused.status_code == 429, refused.text
                assert int(refused.headers["Retry-After"]) >= 1
                assert refused.json()["detail"].startswith(
                    "2 tree renders running for this API key, the most allowed (2); retry when one ends")
                # Bob is still served: five requests at once for his running job's partial tree...
                bobs = [pool.submit(tree, running["bob"], bob) for _ in range(5)]
                wait_for(lambda: waiting_on_nodes(clean_pg) >= 3, "bob's render under way")
                time.sleep(0.5)  # the other four have arrived: they wait for that render, not the lock
                assert waiting_on_nodes(clean_pg) == 3
                assert not any(future.done() for future in bobs)
                # ...and, with every slot of the server taken, his finished tree from memory.
                started = time.monotonic()
                again = tree(finished["bob"], bob, timeout=5)
                assert again.status_code == 200 and again.content == kept.content
                assert time.monotonic() - started < 2
                full = tree(finished["carol"], carol, timeout=5)
                assert full.status_code == 429, full.text
                assert full.json()["detail"].startswith("the server's 3 tree renders are running")
            finally:
                lock.rollback()
        documents = [future.result(timeout=30) for future in alices + bobs]
        assert all(response.status_code == 200 for response in documents), [r.text for r in documents]
        assert len({response.content for response in documents[2:]}) == 1  # bob's five: one document
        assert json.loads(documents[2].content)["metadata"]["job"]["status"] == "running"
        assert renders() - before == 3  # alice's two, bob's one
        # The slots are free again.
        assert tree(finished["alice"], alice, max_depth=3).status_code == 200
        assert tree(finished["carol"], carol).status_code == 200
