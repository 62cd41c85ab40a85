"""Limits: the operator's caps on a job's size and on request bodies, a token bucket of requests per
key (in Redis, shared by every API process; in-process when embedded) and a quota of queued + running
jobs per key, counted in Postgres and held under concurrent submissions. Refusals are 429s with a
Retry-After header and a JSON body saying what to do."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from bench.factories import RecordingDispatcher
from tests.reliability.conftest import bearer, new_token, service_settings
from tests.utils.servers import embedded_settings, live_api_for
from tokentree.migrations import upgrade_database

REQUEST = {"prompt": "The capital of India is", "parameters": {"max_nodes": 50}}


def assert_429(response: httpx.Response, words: str) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["detail"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


def test_the_operators_caps(tmp_path: Path) -> None:
    settings = embedded_settings(
        tmp_path,
        max_nodes=1000,
        max_depth=50,
        max_new_tokens=20,
        max_prompt_chars=100,
        max_request_bytes=4096,
        rate_limit_per_minute=0,
    )
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher()) as api:
        for change, field in (
            ({"parameters": {"max_nodes": 1001}}, "max_nodes"),
            ({"parameters": {"max_depth": 51}}, "max_depth"),
            ({"kind": "logprobs", "parameters": {"max_new_tokens": 21}}, "max_new_tokens"),
            ({"prompt": "x" * 101}, "prompt"),
            ({"prefix": "x" * 101}, "prefix"),
        ):
            response = api.client.post("/v1/jobs", json={**REQUEST, **change})
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"][-1] == field
        assert api.client.post("/v1/jobs", json={**REQUEST, "prompt": "x" * 5000}).status_code == 413
        ok = api.client.post(
            "/v1/jobs",
            json={**REQUEST, "prompt": "x" * 100, "parameters": {"max_nodes": 1000, "max_depth": 50}},
        )
        assert ok.status_code == 201, ok.text
        # A lone surrogate cannot be stored: a 422 naming the field, not a 500 from the database.
        response = api.client.post(
            "/v1/jobs", content=b'{"prompt": "a\\ud800b"}', headers={"content-type": "application/json"}
        )
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "prompt"]


def burst(client: httpx.Client, path: str, count: int, headers: dict[str, str] | None = None) -> list[int]:
    return [client.get(path, headers=headers).status_code for _ in range(count)]


def test_embedded_rate_limit_is_in_process(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, rate_limit_per_minute=60, rate_limit_burst=5)
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher()) as api:
        codes = burst(api.client, "/v1/jobs", 8)
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        response = api.client.get("/v1/jobs")
        assert_429(response, "rate limit exceeded: 60 requests per minute for this client")
        assert api.client.get("/healthz").status_code == 200  # probes are not limited
        time.sleep(1.1)  # one request a second comes back
        assert api.client.get("/v1/jobs").status_code == 200


@pytest.mark.services
def test_rate_limit_per_key_in_redis_is_shared_by_api_processes(
    clean_pg: Engine, postgres_url: str, redis_url: str
) -> None:
    _, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    settings = service_settings(
        postgres_url, redis_url, require_api_key=True, rate_limit_per_minute=30, rate_limit_burst=6
    )
    # Two API processes behind one balancer: the bucket is in Redis, so they share it.
    with live_api_for(settings) as first, live_api_for(settings) as second:
        codes = burst(first.client, "/v1/jobs", 3, bearer(alice)) + burst(
            second.client, "/v1/jobs", 3, bearer(alice)
        )
        assert codes == [200] * 6
        response = second.client.get("/v1/models", headers=bearer(alice))
        retry_after = assert_429(response, "30 requests per minute for this API key")
        assert retry_after == 2  # one request every 2 s refills
        assert first.client.get("/v1/jobs", headers=bearer(bob)).status_code == 200  # bob has his own bucket
        metrics = first.client.get("/metrics").text
        assert 'tokentree_requests_refused_total{reason="rate_limit"} 0.0' in metrics  # counted per process
        assert (
            'tokentree_requests_refused_total{reason="rate_limit"} 1.0' in second.client.get("/metrics").text
        )


@pytest.mark.services
def test_active_jobs_quota_per_key(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    _, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    settings = service_settings(postgres_url, redis_url, require_api_key=True, max_active_jobs_per_key=4)
    with live_api_for(settings) as api:
        # 16 submissions at once: the quota holds exactly (the count and the insert are serialised).
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(
                pool.map(
                    lambda _: api.client.post("/v1/jobs", json=REQUEST, headers=bearer(alice)), range(16)
                )
            )
        assert sorted(r.status_code for r in codes) == [201] * 4 + [429] * 12
        refused = next(r for r in codes if r.status_code == 429)
        assert assert_429(refused, "this API key has 4 queued or running jobs, the most allowed (4)") == 10
        assert api.client.get("/v1/jobs", headers=bearer(alice)).json()["total"] == 4
        assert api.client.post("/v1/jobs", json=REQUEST, headers=bearer(bob)).status_code == 201
        # A job that ends frees its place.
        first = next(r.json()["id"] for r in codes if r.status_code == 201)
        assert api.client.post(f"/v1/jobs/{first}/cancel", headers=bearer(alice)).status_code == 200
        assert api.client.post("/v1/jobs", json=REQUEST, headers=bearer(alice)).status_code == 201
        assert api.client.post("/v1/jobs", json=REQUEST, headers=bearer(alice)).status_code == 429
