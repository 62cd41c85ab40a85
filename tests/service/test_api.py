"""The API over HTTP, in both modes: embedded (SQLite) and distributed (Postgres, Celery on Redis).

Jobs are submitted through the API; their nodes are written with the factories, standing in for a
worker, so every read endpoint is checked against a tree whose shape is known.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.factories import RecordingDispatcher, insert_tree, synthetic_tree
from tests.utils.servers import LiveAPI, embedded_settings, live_api_for, postgres_settings
from tokentree.api.dispatch import model_queue
from tokentree.engine.params import LogprobsParams, ScoreParams, TreeParams
from tokentree.migrations import upgrade_database
from tokentree.models import jobs

TREE_REQUEST = {"prompt": "The capital of India is",
                "parameters": {"max_nodes": 500, "max_completed_paths": 5}}
PARAMETER = ["body", "parameters"]
JSON_BODY = {"content-type": "application/json"}


def submit(api: LiveAPI, **changes: Any) -> dict[str, Any]:
    response = api.client.post("/v1/jobs", json={**TREE_REQUEST, **changes})
    assert response.status_code == 201, response.text
    return response.json()


def queued_tasks(api: LiveAPI, model: str = "demo") -> list[dict[str, Any]]:
    """The Celery messages waiting on a model's queue (distributed mode)."""
    client = redis.Redis.from_url(api.settings.redis_url or "")
    messages = [json.loads(raw) for raw in client.lrange(model_queue(model), 0, -1)]
    client.close()
    return messages


def dispatched(api: LiveAPI) -> list[tuple[str, str]]:
    """(job id, model) of every job handed to the workers, oldest first."""
    if api.mode == "embedded":
        return list(api.dispatcher.submitted)
    found = []
    for model in api.settings.models:
        for message in queued_tasks(api, model):
            assert message["headers"]["task"] == "tokentree.run_job"
            found.append((message["headers"]["argsrepr"].strip("[]'\""), model))
    return found[::-1]  # Redis queues are LPUSHed


def write_tree(api: LiveAPI, job_id: str, size: int, **kwargs: Any) -> list[int]:
    with api.session() as session:
        return insert_tree(session, uuid.UUID(job_id), synthetic_tree(size, **kwargs))


def set_status(api: LiveAPI, job_id: str, status: str, **kwargs: Any) -> None:
    with api.session() as session:
        jobs.mark_running(session, job_id, "test-worker")
        if status != "running":
            assert jobs.finish_job(session, job_id, status, **kwargs)


# -- submit -------------------------------------------------------------------------------------------


def test_submit_commits_then_dispatches(live_api: LiveAPI) -> None:
    job = submit(live_api, chat=True, prefix="Well,")
    assert job["status"] == "queued"
    assert (job["kind"], job["model"], job["chat"], job["prefix"]) == ("tree", "demo", True, "Well,")
    # Parameters are stored complete: the engine's defaults fill what the request left out.
    assert job["parameters"] == {**TreeParams().to_dict(), "max_nodes": 500, "max_completed_paths": 5}
    assert job["progress"] == {"nodes": 0, "frontier": 0, "completed_paths": 0, "workers": {}}
    assert job["created_at"].endswith("Z") and job["started_at"] is None
    assert dispatched(live_api) == [(job["id"], "demo")]
    fetched = live_api.client.get(f"/v1/jobs/{job['id']}").json()
    assert fetched == job


def test_a_retried_submission_with_an_idempotency_key_returns_the_same_job(live_api: LiveAPI) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = live_api.client.post("/v1/jobs", json=TREE_REQUEST, headers=key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = live_api.client.post("/v1/jobs", json=TREE_REQUEST, headers=key)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert dispatched(live_api) == [(first.json()["id"], "demo")]  # queued once
    # The same key for another request is refused, naming the header; a new key makes a new job.
    other = live_api.client.post("/v1/jobs", json={**TREE_REQUEST, "prompt": "Another"}, headers=key)
    assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert first.json()["id"] in other.json()["detail"][0]["msg"]
    assert submit(live_api)["id"] != first.json()["id"]
    for bad in ("", "has space", "x" * 256):
        response = live_api.client.post("/v1/jobs", json=TREE_REQUEST, headers={"Idempotency-Key": bad})
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["header", "idempotency-key"], bad
    assert live_api.client.get("/v1/jobs").json()["total"] == 2


@pytest.mark.services
def test_simultaneous_submissions_with_one_key_make_one_job(
    postgres_url: str, redis_url: str, pg_session: Session
) -> None:
    """Eight clients send the same submission with the same key at once: one job, one task, and every
    client gets that job (the unique key settles the race in the database)."""
    from concurrent.futures import ThreadPoolExecutor

    with live_api_for(postgres_settings(postgres_url, redis_url)) as api:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: api.client.post("/v1/jobs", json=TREE_REQUEST, headers=key),
                                      range(8)))
        assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
        assert len({r.json()["id"] for r in responses}) == 1
        assert len(dispatched(api)) == 1


def test_submit_score(live_api: LiveAPI) -> None:
    """A score job keeps its text; its parameters are completed as any kind's are."""
    job = submit(live_api, kind="score", text=", there was a fox.", chat=True,
                 parameters={"include_prompt": True})
    assert (job["kind"], job["text"], job["chat"]) == ("score", ", there was a fox.", True)
    assert job["parameters"] == {**ScoreParams().to_dict(), "include_prompt": True}
    assert dispatched(live_api) == [(job["id"], "demo")]
    assert live_api.client.get(f"/v1/jobs/{job['id']}").json()["text"] == ", there was a fox."
    assert submit(live_api)["text"] is None  # the other kinds have none


def test_submit_logprobs(live_api: LiveAPI) -> None:
    job = submit(live_api, kind="logprobs", parameters={"top_k": 3})
    assert job["parameters"] == {"max_new_tokens": 100, "top_k": 3, "temperature": 1.0, "top_k_filter": 0,
                                 "top_p": 1.0, "min_p": 0.0}


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"parameters": {"max_nodes": 0}}, ["body", "parameters", "max_nodes"], "between 1 and"),
        ({"parameters": {"min_branch_threshold": 1.5}}, ["body", "parameters", "min_branch_threshold"],
         "between 0 and 1"),
        ({"parameters": {"min_branch_threshold": 0.6}}, ["body", "parameters", "min_branch_threshold"],
         "must not exceed max_branch_threshold"),
        ({"parameters": {"max_nodez": 5}}, ["body", "parameters", "max_nodez"], "unknown parameter"),
        ({"parameters": {"max_nodes": "many"}}, ["body", "parameters", "max_nodes"], "must be an integer"),
        ({"parameters": {"max_nodes": 10_000_000}}, ["body", "parameters", "max_nodes"], "between 1 and"),
        ({"parameters": {"max_nodes": 200_000}}, [*PARAMETER, "max_nodes"], "at most 100000 on this"),
        ({"parameters": {"max_depth": 50_000}}, ["body", "parameters", "max_depth"], "at most 10000 on this"),
        ({"kind": "logprobs", "parameters": {"top_k": 0}}, ["body", "parameters", "top_k"], "between 1 and"),
        ({"kind": "logprobs", "parameters": {"max_nodes": 5}}, ["body", "parameters", "max_nodes"],
         "unknown parameter"),
        ({"kind": "logprobs", "parameters": {"max_new_tokens": 5000}}, [*PARAMETER, "max_new_tokens"],
         "at most 2000 on this"),
        ({"model": "/etc/passwd"}, ["body", "model"], "not served here; one of demo"),
        ({"model": "gpt"}, ["body", "model"], "not served here"),
        ({"kind": "poem"}, ["body", "kind"], "'tree', 'logprobs' or 'score'"),
        ({"kind": "score"}, ["body", "text"], "needs the text to score"),
        ({"kind": "score", "text": ""}, ["body", "text"], "needs the text to score"),
        ({"kind": "score", "text": "a\x00b"}, ["body", "text"], "NUL"),
        ({"kind": "score", "text": "x" * 20_001}, ["body", "text"], "at most 20000 characters"),
        ({"kind": "score", "text": "x", "parameters": {"include_prompt": 1}}, [*PARAMETER, "include_prompt"],
         "true or false"),
        ({"kind": "score", "text": "x", "parameters": {"top_k": 101}}, [*PARAMETER, "top_k"],
         "between 1 and"),
        ({"kind": "score", "text": "x", "parameters": {"max_nodes": 5}}, [*PARAMETER, "max_nodes"],
         "unknown parameter"),
        ({"text": "a fox"}, ["body", "text"], "only score jobs take a text"),
        ({"kind": "logprobs", "text": "a fox"}, ["body", "text"], "only score jobs take a text"),
        ({"prompt": ""}, ["body", "prompt"], "at least 1 character"),
        ({"prompt": " \n\t "}, ["body", "prompt"], "only whitespace"),
        ({"prompt": 42}, ["body", "prompt"], "valid string"),
        ({"prompt": "x" * 20_001}, ["body", "prompt"], "at most 20000 characters"),
        ({"prompt": "a\x00b"}, ["body", "prompt"], "NUL"),
        ({"prefix": "\x00"}, ["body", "prefix"], "NUL"),
        ({"chat": "yes"}, ["body", "chat"], "valid boolean"),
        ({"parameters": [1, 2]}, ["body", "parameters"], "valid dictionary"),
        ({"temperature": 0.7}, ["body", "temperature"], "Extra inputs"),
        ({"parameters": {"temperature": 0}}, [*PARAMETER, "temperature"], "must be greater than 0"),
        ({"parameters": {"temperature": 101}}, [*PARAMETER, "temperature"], "at most 100"),
        ({"parameters": {"top_p": 1.5}}, [*PARAMETER, "top_p"], "between 0 and 1"),
        ({"parameters": {"min_p": "0.1"}}, [*PARAMETER, "min_p"], "must be a number"),
        ({"parameters": {"top_k_filter": 0.5}}, [*PARAMETER, "top_k_filter"], "must be an integer"),
        ({"parameters": {"max_candidates": 0}}, [*PARAMETER, "max_candidates"], "between 1 and 100"),
        ({"kind": "logprobs", "parameters": {"temperature": -1}}, [*PARAMETER, "temperature"],
         "must be greater than 0"),
        ({"kind": "logprobs", "parameters": {"max_candidates": 5}}, [*PARAMETER, "max_candidates"],
         "unknown parameter"),
    ],
)
def test_bad_requests_are_422_naming_the_field(live_api: LiveAPI, change: dict[str, Any], loc: list[str],
                                               message: str) -> None:
    response = live_api.client.post("/v1/jobs", json={**TREE_REQUEST, **change})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [loc]
    assert message in errors[0]["msg"]
    assert dispatched(live_api) == []
    assert live_api.client.get("/v1/jobs").json()["total"] == 0


def test_a_missing_prompt_and_broken_json(live_api: LiveAPI) -> None:
    response = live_api.client.post("/v1/jobs", json={"kind": "tree"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "prompt"]
    response = live_api.client.post("/v1/jobs", content=b"{not json", headers=JSON_BODY)
    assert response.status_code == 422


def test_request_bodies_are_capped(live_api: LiveAPI) -> None:
    big = {**TREE_REQUEST, "prompt": "x" * (live_api.settings.max_request_bytes + 1)}
    response = live_api.client.post("/v1/jobs", json=big)
    assert response.status_code == 413

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        yield json.dumps(big).encode()

    response = live_api.client.post("/v1/jobs", content=chunks(), headers=JSON_BODY)
    assert response.status_code == 413


# -- list, read, cancel, delete -------------------------------------------------------------------------


def test_list_pages_newest_first_and_filters_by_status(live_api: LiveAPI) -> None:
    made = [submit(live_api, prompt=f"prompt {i}")["id"] for i in range(5)]
    set_status(live_api, made[2], "running")
    set_status(live_api, made[4], "succeeded")
    page = live_api.client.get("/v1/jobs", params={"limit": 2}).json()
    assert page["total"] == 5 and [j["id"] for j in page["items"]] == [made[4], made[3]]
    page = live_api.client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert [j["id"] for j in page["items"]] == [made[2], made[1]]
    page = live_api.client.get("/v1/jobs", params={"status": "running"}).json()
    assert page["total"] == 1 and page["items"][0]["id"] == made[2]
    listed = page["items"][0]["progress"]
    assert listed == {"nodes": 0, "frontier": None, "completed_paths": 0, "workers": None}
    for params, field in (({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"limit": 201}, "limit"),
                          ({"offset": -1}, "offset")):
        response = live_api.client.get("/v1/jobs", params=params)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", field]


def test_progress_of_a_running_job(live_api: LiveAPI) -> None:
    job = submit(live_api)
    set_status(live_api, job["id"], "running")
    nodes = synthetic_tree(200, seed=5)
    with live_api.session() as session:
        insert_tree(session, uuid.UUID(job["id"]), nodes, workers=["gpu-0", "gpu-1"])
    got = live_api.client.get(f"/v1/jobs/{job['id']}").json()
    expanded = sum(n.is_expanded for n in nodes)
    assert got["status"] == "running" and got["started_at"] is not None
    assert got["progress"] == {
        "nodes": 200,
        "frontier": sum(not n.is_finished and not n.is_expanded for n in nodes),
        "completed_paths": sum(n.finish_reason == "stop" for n in nodes),
        "workers": {"gpu-0": (expanded + 1) // 2, "gpu-1": expanded // 2},
    }
    listed = live_api.client.get("/v1/jobs").json()["items"][0]["progress"]
    assert (listed["nodes"], listed["completed_paths"]) == (200, got["progress"]["completed_paths"])


def test_unknown_and_malformed_job_ids(live_api: LiveAPI) -> None:
    missing = uuid.uuid4()
    for method, path in (("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/tree"),
                         ("GET", "/paths"), ("GET", "/logprobs.jsonl"), ("GET", "/events")):
        assert live_api.client.request(method, f"/v1/jobs/{missing}{path}").status_code == 404
        response = live_api.client.request(method, f"/v1/jobs/not-a-uuid{path}")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "job_id"]
        # In plain words that say what an id looks like, not the validation library's.
        message = response.json()["detail"][0]["msg"]
        assert message.startswith("is not an id: ids are UUIDs such as ") and "Input should" not in message


def test_cancel_keeps_the_partial_tree_and_signals_workers(live_api: LiveAPI) -> None:
    job = submit(live_api)
    set_status(live_api, job["id"], "running")
    write_tree(live_api, job["id"], 50)
    response = live_api.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert cancelled["progress"]["nodes"] == 50
    # Idempotent; the partial tree stays readable.
    assert live_api.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    tree = live_api.client.get(f"/v1/jobs/{job['id']}/tree").json()
    assert tree["metadata"]["job"]["status"] == "cancelled"


def test_a_finished_job_cannot_be_cancelled(live_api: LiveAPI) -> None:
    job = submit(live_api)
    set_status(live_api, job["id"], "succeeded")
    response = live_api.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]


def test_delete_cancels_then_removes(live_api: LiveAPI) -> None:
    job = submit(live_api)
    set_status(live_api, job["id"], "running")
    write_tree(live_api, job["id"], 30)
    assert live_api.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert live_api.client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert live_api.client.delete(f"/v1/jobs/{job['id']}").status_code == 404


# -- trees, paths, records ------------------------------------------------------------------------------


def test_tree_in_the_cli_layout_with_options(live_api: LiveAPI) -> None:
    job = submit(live_api)
    set_status(live_api, job["id"], "succeeded", result={"stats": {"nodes": 400}})
    db_ids = write_tree(live_api, job["id"], 400, seed=11)
    response = live_api.client.get(f"/v1/jobs/{job['id']}/tree")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["metadata"]["prompt"] == TREE_REQUEST["prompt"]
    assert document["metadata"]["stats"] == {"nodes": 400}
    root = document["tree"]
    assert root["id"] == db_ids[0] and root["depth"] == 0 and root["token_id"] is None
    assert set(root) >= {"text", "prob", "logprob", "cumulative_prob", "candidates", "children",
                         "child_count"}

    def count(node: dict[str, Any]) -> int:
        return 1 + sum(count(child) for child in node["children"])

    assert count(root) == 400
    shallow = live_api.client.get(f"/v1/jobs/{job['id']}/tree", params={"max_depth": 1}).json()["tree"]
    assert all(child["children"] == [] and child["child_count"] >= 0 for child in shallow["children"])
    assert len(shallow["children"]) == root["child_count"]
    branch = root["children"][0]
    sub = live_api.client.get(f"/v1/jobs/{job['id']}/tree", params={"root": branch["id"]}).json()["tree"]
    assert sub == branch
    for params, field in (({"root": 10**9}, "root"), ({"root": 0}, "root"), ({"max_depth": -1}, "max_depth")):
        response = live_api.client.get(f"/v1/jobs/{job['id']}/tree", params=params)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", field]


def test_tree_of_a_job_without_nodes_or_of_another_kind(live_api: LiveAPI) -> None:
    job = submit(live_api)
    response = live_api.client.get(f"/v1/jobs/{job['id']}/tree")
    assert response.status_code == 409 and "no nodes yet" in response.json()["detail"]
    for other in (submit(live_api, kind="logprobs", parameters={}),
                  submit(live_api, kind="score", text=" a fox", parameters={})):
        assert live_api.client.get(f"/v1/jobs/{other['id']}/tree").status_code == 409
        assert live_api.client.get(f"/v1/jobs/{other['id']}/paths").status_code == 409
    assert live_api.client.get(f"/v1/jobs/{job['id']}/logprobs.jsonl").status_code == 409


def test_paths_ranked_by_cumulative_probability(live_api: LiveAPI) -> None:
    job = submit(live_api)
    write_tree(live_api, job["id"], 500, seed=4, stop_share=0.3)
    paths = live_api.client.get(f"/v1/jobs/{job['id']}/paths").json()["paths"]
    assert len(paths) > 3
    probs = [p["cumulative_prob"] for p in paths]
    assert probs == sorted(probs, reverse=True)
    assert all(set(p) == {"node_id", "text", "cumulative_prob", "tokens"} for p in paths)
    assert all(p["tokens"][-1] == 1 for p in paths)  # the factories' stop token ends each one
    top = live_api.client.get(f"/v1/jobs/{job['id']}/paths", params={"limit": 2}).json()["paths"]
    assert top == paths[:2]
    # A forced prefix is part of every path's response: its text is the prefix, then its tokens.
    forced = submit(live_api, prefix=" **Well,**")
    write_tree(live_api, forced["id"], 500, seed=4, stop_share=0.3)
    with_prefix = live_api.client.get(f"/v1/jobs/{forced['id']}/paths").json()["paths"]
    assert [p["text"] for p in with_prefix] == [" **Well,**" + p["text"] for p in paths]
    tree = live_api.client.get(f"/v1/jobs/{forced['id']}/tree").json()
    assert (tree["metadata"]["prompt"], tree["metadata"]["prefix"]) == (TREE_REQUEST["prompt"], " **Well,**")
    assert live_api.client.get(f"/v1/jobs/{job['id']}/paths", params={"limit": 1001}).status_code == 422


def test_logprobs_record_as_jsonl(live_api: LiveAPI) -> None:
    job = submit(live_api, kind="logprobs", parameters={})
    assert live_api.client.get(f"/v1/jobs/{job['id']}/logprobs.jsonl").status_code == 409  # not yet
    step = {"token": " Delhi", "logprob": -0.1, "prob": 90.4, "other_tokens": []}
    record = {"prompt": TREE_REQUEST["prompt"], "response": " Delhi", "data": [step],
              "metadata": {"model": "demo"}}
    set_status(live_api, job["id"], "succeeded", result={"record": record})
    response = live_api.client.get(f"/v1/jobs/{job['id']}/logprobs.jsonl")
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n") and response.text.count("\n") == 1
    assert json.loads(response.text) == record
    # A score job's record is served at the same place.
    scored = submit(live_api, kind="score", text=" Delhi", parameters={})
    assert live_api.client.get(f"/v1/jobs/{scored['id']}/logprobs.jsonl").status_code == 409  # not yet
    record = {**record, "text": " Delhi", "totals": {"text": {"tokens": 1, "sum_logprob": -0.1}}}
    set_status(live_api, scored["id"], "succeeded", result={"record": record})
    assert json.loads(live_api.client.get(f"/v1/jobs/{scored['id']}/logprobs.jsonl").text) == record


# -- events -----------------------------------------------------------------------------------------------


def read_events(api: LiveAPI, job_id: str, on_event: Any = None) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with api.client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name or "", json.loads(line.removeprefix("data: "))))
                if on_event is not None:
                    on_event(events)
    return events


def test_events_stream_progress_until_the_end(live_api: LiveAPI) -> None:
    job = submit(live_api)

    def worker_steps(events: list[tuple[str, dict[str, Any]]]) -> None:
        # Each event moves the job on, as a worker would: running, some nodes, then done.
        if len(events) == 1:
            set_status(live_api, job["id"], "running")
        elif len(events) == 2:
            write_tree(live_api, job["id"], 40)
        elif len(events) == 3:
            with live_api.session() as session:
                jobs.finish_job(session, job["id"], "succeeded")

    events = read_events(live_api, job["id"], worker_steps)
    assert [name for name, _ in events] == ["progress", "progress", "progress", "end"]
    assert [body["status"] for _, body in events] == ["queued", "running", "running", "succeeded"]
    assert events[2][1]["progress"]["nodes"] == 40
    # A finished job's stream is its final state alone.
    assert [name for name, _ in read_events(live_api, job["id"])] == ["end"]


def test_an_event_stream_says_when_its_job_was_deleted(live_api: LiveAPI) -> None:
    job = submit(live_api)

    def delete(events: list[tuple[str, dict[str, Any]]]) -> None:
        if len(events) == 1:
            assert live_api.client.delete(f"/v1/jobs/{job['id']}").status_code == 204

    events = read_events(live_api, job["id"], delete)
    assert [name for name, _ in events] == ["progress", "error"]
    assert "deleted" in events[1][1]["detail"]


# -- models, health, docs, viewers --------------------------------------------------------------------------


def test_models_health_docs_and_viewers(live_api: LiveAPI) -> None:
    assert live_api.client.get("/v1/models").json() == {"models": [{"name": "demo", "default": True}]}
    health = live_api.client.get("/healthz")
    assert health.status_code == 200
    # Jobs of earlier tests wait, and no worker runs here: the distributed API says their model waits for
    # one (200, degraded); the embedded one's worker serves every model.
    with live_api.session_factory() as session:  # every caller's, not only those this client may list
        waiting = session.scalar(text("SELECT count(*) FROM jobs WHERE model = 'demo' "
                                      "AND status IN ('queued', 'running')"))
    unserved = ["demo"] if waiting and live_api.mode != "embedded" else []
    assert health.json() == {"status": "degraded" if unserved else "ok", "database": "ok",
                             "broker": "embedded" if live_api.mode == "embedded" else "ok",
                             "unserved_models": unserved}
    schema = live_api.client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}/tree", "/v1/jobs/{job_id}/events", "/v1/models",
            "/healthz"} <= set(schema["paths"])
    assert live_api.client.get("/docs").status_code == 200
    assert live_api.client.get("/").status_code == 200
    assert live_api.client.get("/static/vendor/d3.min.js").status_code == 200


def test_a_job_that_cannot_be_queued_fails_visibly(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher(fail_submit=True)) as api:
        response = api.client.post("/v1/jobs", json=TREE_REQUEST)
        assert response.status_code == 503
        [job] = api.client.get("/v1/jobs").json()["items"]
    assert job["status"] == "failed" and "could not queue the job: broker down" in job["error"]


@pytest.mark.services
def test_an_unreachable_broker_fails_health_and_submits(postgres_url: str, pg_session: Session) -> None:
    settings = postgres_settings(postgres_url, "redis://127.0.0.1:1/0")
    with live_api_for(settings) as api:
        response = api.client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "database": "ok", "broker": "unreachable",
                                   "unserved_models": []}
        assert api.client.post("/v1/jobs", json=TREE_REQUEST).status_code == 503
        [job] = api.client.get("/v1/jobs").json()["items"]
    assert job["status"] == "failed" and "could not queue" in job["error"]


def test_clients_only_name_allow_listed_models(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, models="gemma=google/gemma-2-2b-it,demo")
    upgrade_database(settings.sqlalchemy_url)
    dispatcher = RecordingDispatcher()
    with live_api_for(settings, dispatcher) as api:
        assert api.client.get("/v1/models").json()["models"] == [{"name": "gemma", "default": True},
                                                                 {"name": "demo", "default": False}]
        job = api.client.post("/v1/jobs", json={"prompt": "hi"}).json()
        assert job["model"] == "gemma"
        response = api.client.post("/v1/jobs", json={"prompt": "hi", "model": "google/gemma-2-2b-it"})
        assert response.status_code == 422 and "one of gemma, demo" in response.json()["detail"][0]["msg"]
    assert dispatcher.submitted == [(job["id"], "gemma")]


def test_a_finished_tree_is_kept_and_revalidated(live_api: LiveAPI) -> None:
    job = submit(live_api)
    set_status(live_api, job["id"], "running")
    write_tree(live_api, job["id"], 50)
    running = live_api.client.get(f"/v1/jobs/{job['id']}/tree")
    assert running.headers["cache-control"] == "no-store" and "etag" not in running.headers
    set_status(live_api, job["id"], "succeeded")
    first = live_api.client.get(f"/v1/jobs/{job['id']}/tree")
    etag = first.headers["etag"]
    assert first.json()["metadata"]["job"]["status"] == "succeeded"
    assert live_api.client.get(f"/v1/jobs/{job['id']}/tree").content == first.content
    again = live_api.client.get(f"/v1/jobs/{job['id']}/tree", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    shallow = live_api.client.get(f"/v1/jobs/{job['id']}/tree", params={"max_depth": 1})
    assert shallow.headers["etag"] != etag and shallow.content != first.content
    assert live_api.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert live_api.client.get(f"/v1/jobs/{job['id']}/tree").status_code == 404


def test_the_api_knows_every_status() -> None:
    from typing import get_args

    from tokentree.api.schemas import JobStatus
    from tokentree.models.schema import JOB_STATUSES

    assert get_args(JobStatus) == JOB_STATUSES


@pytest.mark.parametrize(("path", "view"), [
    ("/", "jobs"), ("/viewer/tree", "tree"), ("/viewer/response", "response"),
    ("/viewer/logprobs", "logprobs"), ("/viewer/compare", "compare"),
])
def test_pages_share_one_top_bar_with_their_own_link_active(live_api: LiveAPI, path: str, view: str) -> None:
    response = live_api.client.get(path)
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert page.count('<header class="topbar">') == 1 and "<!-- topbar -->" not in page
    assert page.count('class="active"') == 1 and f'data-view="{view}" class="active"' in page


def test_the_parameters_a_server_takes_are_described_with_its_own_defaults(tmp_path: Path) -> None:
    """`GET /v1/parameters` is the engine's parameters with this server's caps; a request that leaves
    them all out gets exactly the described defaults (the web form's fields come from here)."""
    settings = embedded_settings(tmp_path, max_nodes=500, max_new_tokens=40)
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher()) as api:
        described = api.client.get("/v1/parameters").json()
        tree = {p["name"]: p for p in described["tree"]}
        logprobs = {p["name"]: p for p in described["logprobs"]}
        score = {p["name"]: p for p in described["score"]}
        assert list(tree) == [f.name for f in dataclasses.fields(TreeParams)]
        assert list(logprobs) == [f.name for f in dataclasses.fields(LogprobsParams)]
        assert list(score) == [f.name for f in dataclasses.fields(ScoreParams)]
        assert score["include_prompt"]["type"] == "boolean" and score["include_prompt"]["default"] is False
        assert tree["max_nodes"]["default"] == tree["max_nodes"]["maximum"] == 500  # capped below 100,000
        assert tree["max_depth"]["default"] == TreeParams().max_depth
        assert tree["min_branch_threshold"] | {"description": ""} == {
            "name": "min_branch_threshold", "type": "number", "default": 0.1, "minimum": 0,
            "exclusive_minimum": False, "maximum": 1, "description": ""}
        # The sampler's settings, for trees and logprobs alike; a temperature must be above its minimum.
        assert tree["temperature"] == logprobs["temperature"]
        assert (tree["temperature"]["minimum"], tree["temperature"]["exclusive_minimum"]) == (0, True)
        assert tree["max_candidates"]["default"] == 10 and tree["top_k_filter"]["type"] == "integer"
        assert logprobs["max_new_tokens"]["default"] == 40 and logprobs["top_k"]["type"] == "integer"
        for kind, table in (("tree", tree), ("logprobs", logprobs), ("score", score)):
            text = " there" if kind == "score" else None
            job = api.client.post("/v1/jobs", json={"prompt": "hi", "kind": kind, "text": text}).json()
            assert job["parameters"] == {name: p["default"] for name, p in table.items()}


def test_every_route_that_takes_a_session_gives_it_back_when_it_returns(tmp_path: Path) -> None:
    """No route can hold its connection while its response waits for a thread (see `ReleasesSession`):
    every route that depends on a session, directly or through another dependency, has the class."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from tokentree.api.app import create_app
    from tokentree.api.deps import ReleasesSession, get_db

    def takes_session(dependant: Dependant) -> bool:
        return any(d.call is get_db or takes_session(d) for d in dependant.dependencies)

    def routes(within: list[Any]) -> Iterator[Any]:  # included routers hold theirs
        for route in within:
            included = getattr(route, "original_router", None)
            yield from routes(included.routes) if included is not None else [route]

    app = create_app(embedded_settings(tmp_path), RecordingDispatcher())
    with_session = [r for r in routes(app.routes) if isinstance(r, APIRoute) and takes_session(r.dependant)]
    assert {r.path for r in with_session} >= {"/v1/jobs", "/v1/jobs/{job_id}/tree", "/healthz"}
    assert [r.path for r in with_session if not isinstance(r, ReleasesSession)] == []
