"""Operations: /metrics in Prometheus' format (jobs by status, nodes and nodes/s, frontier, queues,
workers alive), JSON log lines carrying the job id from `tokentree serve`, and `tokentree status` in
both modes."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from bench.factories import RecordingDispatcher, insert_tree, synthetic_tree
from tests.reliability.conftest import service_settings
from tests.utils.cli import run_cli, tokentree_serve
from tests.utils.servers import embedded_settings, live_api_for
from tokentree.api.dispatch import model_queue
from tokentree.migrations import upgrade_database
from tokentree.models import jobs, worker_registry
from tokentree.models.db import make_session_factory
from tokentree.models.worker_registry import WorkerBeat

REQUEST = {"prompt": "The capital of India is", "parameters": {"max_nodes": 50}}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.mark.services
def test_metrics_from_postgres_and_redis(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    import redis

    settings = service_settings(postgres_url, redis_url, models="demo,small=demo")
    with live_api_for(settings) as api:
        ids = [api.client.post("/v1/jobs", json=REQUEST).json()["id"] for _ in range(3)]
        api.client.post("/v1/jobs", json={**REQUEST, "model": "small"})
        api.client.post(f"/v1/jobs/{ids[0]}/cancel")
        factory = make_session_factory(clean_pg)
        with factory() as session:
            jobs.mark_running(session, ids[1], "test-worker")
            insert_tree(session, uuid.UUID(ids[1]), synthetic_tree(40))  # counts them on the job too
        client = redis.Redis.from_url(redis_url)
        client.sadd(f"tokentree:job:{ids[1]}:open", *range(7))  # the frontier as the workers keep it
        started = time.monotonic()
        response = api.client.get("/metrics")
        assert time.monotonic() - started < 1.0  # never waits on a worker ping
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        assert found[("tokentree_jobs", (("status", "queued"),))] == 2
        assert found[("tokentree_jobs", (("status", "running"),))] == 1
        assert found[("tokentree_jobs", (("status", "cancelled"),))] == 1
        assert found[("tokentree_jobs", (("status", "succeeded"),))] == 0
        assert found[("tokentree_nodes", ())] == 40
        assert found[("tokentree_frontier_nodes", ())] == 7
        assert found[("tokentree_queue_messages", (("model", "demo"),))] == 3
        assert found[("tokentree_queue_messages", (("model", "small"),))] == 1
        assert found[("tokentree_up", (("dependency", "database"),))] == 1
        assert found[("tokentree_up", (("dependency", "broker"),))] == 1
        assert ("tokentree_workers_alive", ()) in found
        # Nodes per second: the growth between two scrapes.
        time.sleep(1.05)
        with factory() as session:
            jobs.add_counts(session, ids[1], nodes=100)
            session.commit()
        rate = samples(api.client.get("/metrics").text)[("tokentree_nodes_per_second", ())]
        assert 50 < rate <= 100
        # Workers alive: those whose heartbeat key is in Redis, read on every scrape.
        assert found[("tokentree_workers_alive", ())] == 0
        assert found[("tokentree_model_workers", (("model", "demo"),))] == 0
        beat = WorkerBeat(name="gpu-7", models=("small",), host="elsewhere", pid=7, state="busy")
        assert worker_registry.claim(client, beat, 5.0) is None
        found = samples(api.client.get("/metrics").text)
        assert found[("tokentree_workers_alive", ())] == 1
        assert found[("tokentree_model_workers", (("model", "small"),))] == 1
        assert found[("tokentree_model_workers", (("model", "demo"),))] == 0
        client.delete(worker_registry.worker_key("gpu-7"))  # its key expired: it is gone
        assert samples(api.client.get("/metrics").text)[("tokentree_workers_alive", ())] == 0
        client.close()


def test_metrics_in_the_embedded_mode(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher()) as api:
        api.client.post("/v1/jobs", json=REQUEST)
        found = samples(api.client.get("/metrics").text)
        assert found[("tokentree_jobs", (("status", "queued"),))] == 1
        assert found[("tokentree_frontier_nodes", ())] == 0
        assert found[("tokentree_workers_alive", ())] == 1
        assert found[("tokentree_up", (("dependency", "broker"),))] == 1


@pytest.mark.services
def test_json_logs_carry_the_job_id(
    tmp_path: Path, clean_pg: Engine, postgres_url: str, redis_url: str
) -> None:
    services = {"TOKENTREE_DATABASE_URL": postgres_url, "TOKENTREE_REDIS_URL": redis_url}
    with tokentree_serve(tmp_path, TOKENTREE_LOG_FORMAT="json", **services) as client:
        job_id = client.post("/v1/jobs", json=REQUEST).json()["id"]
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    log_path = tmp_path / "serve.log"
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    about_job = [entry for entry in entries if entry.get("job_id") == job_id]
    messages = [entry["message"] for entry in about_job]
    assert any(m.startswith("job submitted") for m in messages) and "job cancelled" in messages
    assert any(entry["logger"] == "uvicorn.access" for entry in entries)  # uvicorn's lines too


def test_status_in_the_embedded_mode(tmp_path: Path) -> None:
    done = run_cli("status", XDG_DATA_HOME=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "jobs: queued 0, running 0, succeeded 0, failed 0, cancelled 0" in done.stdout
    assert (
        "mode: embedded (jobs run inside `tokentree serve`; no queues and no separate workers)" in done.stdout
    )


@pytest.mark.services
def test_status_with_postgres_and_redis(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    with live_api_for(service_settings(postgres_url, redis_url)) as api:
        first = api.client.post("/v1/jobs", json=REQUEST).json()
        api.client.post("/v1/jobs", json=REQUEST)
        api.client.post(f"/v1/jobs/{first['id']}/cancel")
    started = time.monotonic()
    done = run_cli("status", TOKENTREE_DATABASE_URL=postgres_url, TOKENTREE_REDIS_URL=redis_url)
    assert done.returncode == 0, done.stderr
    assert "jobs: queued 1, running 0, succeeded 0, failed 0, cancelled 1" in done.stdout
    assert f"queues: {model_queue('demo')} 2" in done.stdout
    assert "workers alive: 0 (no worker heartbeat in Redis)" in done.stdout
    assert f"queues no live worker serves: {model_queue('demo')}" in done.stdout
    assert time.monotonic() - started < 30
