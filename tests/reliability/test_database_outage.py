"""Postgres goes away under a live API (a TCP proxy in front of it is cut): requests get a quick 503
with a JSON body, never a 500 or a hung request; /healthz names the database; /metrics still answers.
When the database comes back the API recovers by itself and every job stored before is intact."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, make_url

from tests.reliability.conftest import service_settings
from tests.utils.proxy import TcpProxy
from tests.utils.servers import live_api_for
from tokentree.models.db import api_engine, make_session_factory

pytestmark = pytest.mark.services
REQUEST = {"prompt": "The capital of India is", "parameters": {"max_nodes": 50}}
DOWN = {"detail": "database unavailable, retry later"}


def timed(call):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_the_api_answers_503_fast_while_postgres_is_away(
    clean_pg: Engine, postgres_url: str, redis_url: str, pg_proxy: TcpProxy
) -> None:
    through_proxy = make_url(postgres_url).set(host="127.0.0.1", port=pg_proxy.port)
    settings = service_settings(
        through_proxy.render_as_string(hide_password=False), redis_url, events_max_s=30
    )
    # The API builds its own engine from the settings: connect and pool timeouts included.
    with live_api_for(settings, session_factory=None) as api:
        app_client = api.client
        before = [app_client.post("/v1/jobs", json=REQUEST).json() for _ in range(3)]
        with app_client.stream("GET", f"/v1/jobs/{before[0]['id']}/events") as events:
            lines = events.iter_lines()
            assert next(lines) == "event: progress"
            pg_proxy.cut()
            slowest = 0.0
            for method, path in (
                ("GET", "/v1/jobs"),
                ("POST", "/v1/jobs"),
                ("GET", f"/v1/jobs/{before[1]['id']}"),
                ("POST", f"/v1/jobs/{before[1]['id']}/cancel"),
                ("DELETE", f"/v1/jobs/{before[2]['id']}"),
                ("GET", f"/v1/jobs/{before[1]['id']}/tree"),
            ):
                response, seconds = timed(lambda m=method, p=path: app_client.request(m, p, json=REQUEST))
                assert response.status_code == 503, (path, response.text)
                assert response.json() == DOWN and response.headers["retry-after"] == "5"
                slowest = max(slowest, seconds)
            assert slowest < 2.0, f"a 503 took {slowest:.2f} s"
            # The open stream ends, saying why, instead of dying silently.
            rest = [line for line in lines if line]
            assert "event: error" in rest and f"data: {DOWN}".replace("'", '"') in rest
        health, seconds = timed(lambda: app_client.get("/healthz"))
        assert health.status_code == 503 and seconds < 2.0
        assert health.json() == {"status": "unavailable", "database": "unreachable", "broker": "ok",
                                 "unserved_models": []}
        metrics = app_client.get("/metrics")
        assert metrics.status_code == 200
        assert 'tokentree_up{dependency="database"} 0.0' in metrics.text
        assert 'tokentree_up{dependency="broker"} 1.0' in metrics.text
        assert 'tokentree_requests_refused_total{reason="database"}' in metrics.text

        pg_proxy.restore()  # the database is back: no restart of the API needed
        listed = app_client.get("/v1/jobs")
        assert listed.status_code == 200
        assert sorted(job["id"] for job in listed.json()["items"]) == sorted(job["id"] for job in before)
        for job in before:  # nothing stored was lost, and nothing half-done happened while it was away
            assert app_client.get(f"/v1/jobs/{job['id']}").json() == job
        health = app_client.get("/healthz")  # up again; its jobs wait, as no worker runs here
        assert health.status_code == 200
        assert health.json() == {"status": "degraded", "database": "ok", "broker": "ok",
                                 "unserved_models": ["demo"]}
        assert app_client.post("/v1/jobs", json=REQUEST).status_code == 201


def test_a_frozen_postgres_is_a_503_within_the_read_timeout_and_nothing_half_done(
    clean_pg: Engine, postgres_url: str, redis_url: str, pg_proxy: TcpProxy
) -> None:
    """Postgres stops answering on connections it keeps open (the proxy holds every byte: a server
    stopped with SIGSTOP, or hung). Neither its statement timeout nor TCP keepalive can end a wait on
    it; before, every request on a pooled connection waited as long as the freeze, and forty of them
    took the API's thread pool, health checks included."""
    through_proxy = make_url(postgres_url).set(host="127.0.0.1", port=pg_proxy.port)
    settings = service_settings(through_proxy.render_as_string(hide_password=False), redis_url,
                                db_read_timeout_s=2.0)
    engine = api_engine(settings)
    try:
        with live_api_for(settings, session_factory=make_session_factory(engine)) as api:
            before = [api.client.post("/v1/jobs", json=REQUEST).json() for _ in range(2)]
            pg_proxy.freeze()
            requests = [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{before[0]['id']}"),
                        ("DELETE", f"/v1/jobs/{before[1]['id']}")] * 3
            with ThreadPoolExecutor(len(requests)) as pool:
                answers = list(pool.map(
                    lambda call: timed(lambda: api.client.request(call[0], call[1], json=REQUEST)), requests))
            for (method, path), (response, seconds) in zip(requests, answers, strict=True):
                assert response.status_code == 503, (method, path, response.text)
                assert response.json() == DOWN
                assert seconds < 6.0, (method, path, seconds)  # the 2 s deadline, checked every 0.25 s
            health, seconds = timed(lambda: api.client.get("/healthz"))
            assert health.status_code == 503 and seconds < 3.0, seconds  # its own 1.5 s deadline
            assert health.json()["database"] == "unreachable"
            pg_proxy.thaw()
            listed = api.client.get("/v1/jobs")
            assert listed.status_code == 200
            # The submissions refused while frozen left no job, the refused deletes deleted nothing.
            assert sorted(job["id"] for job in listed.json()["items"]) == sorted(job["id"] for job in before)
            assert api.client.post("/v1/jobs", json=REQUEST).status_code == 201
    finally:
        pg_proxy.thaw()
        engine.dispose()
