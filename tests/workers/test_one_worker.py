"""One `tokentree worker` process behind the API: the CLI's tree, exactly; duplicate messages change
nothing; cancelling keeps the partial tree; a logprobs job and a score job; a frontier lost with Redis'
state."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from bench.trees import assert_same_tree
from tests.workers.conftest import (
    MODEL,
    MODEL_SOURCE,
    WorkerProcess,
    Workers,
    assert_no_keys_left,
    finished,
    job_keys,
    submit,
    wait_for,
)
from tests.workers.trees import (
    BIG,
    PROMPT,
    SAMPLED,
    SMALL,
    WIDE,
    assert_follows_rule,
    assert_same_coverage,
    cli_tree,
)
from tokentree.engine.analysis import analyze_logprobs
from tokentree.engine.loading import ModelSpec, load_model
from tokentree.engine.params import LogprobsParams, ScoreParams, TreeParams
from tokentree.engine.score import score_text
from tokentree.models.node_writes import tree_totals
from tokentree.models.settings import Settings


@pytest.fixture(scope="module")
def solo(workers: Workers) -> Iterator[WorkerProcess]:
    yield workers.start("solo")


@pytest.mark.parametrize("parameters", [WIDE, SAMPLED], ids=["wide", "sampled"])
def test_one_worker_builds_the_cli_tree(
    api: httpx.Client, solo: WorkerProcess, workers: Workers, tmp_path: Path, parameters: dict
) -> None:
    """3,000 nodes, several batches a level: the same nodes, probabilities (the sampler's and the model's
    own), thresholds, |Q| and probability mass as the CLI."""
    job_id = submit(api, PROMPT, **parameters)
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    tree = api.get(f"/v1/jobs/{job_id}/tree").json()
    reference = cli_tree(tmp_path, MODEL_SOURCE, PROMPT, **parameters)
    assert_same_tree(tree, reference)
    assert_same_coverage(tree["metadata"], reference["metadata"])
    stats = tree["metadata"]["stats"]
    assert job["progress"]["workers"] == {"solo": stats["expanded"]}
    assert job["progress"]["nodes"] == stats["nodes"] == reference["metadata"]["stats"]["nodes"]
    assert stats["nodes"] > 1000  # WIDE reaches its max_nodes, 3000; the sampler's tree ends at 1042


def test_redelivered_messages_change_nothing(
    api: httpx.Client, solo: WorkerProcess, workers: Workers, settings: Settings, tmp_path: Path
) -> None:
    """At-least-once delivery: the same task arriving four times still builds the CLI's tree once."""
    prompt = "The secret to happiness is"
    job_id = submit(api, prompt, **SMALL)
    celery = Celery(broker=settings.redis_url, set_as_current=False)
    for _ in range(3):
        celery.send_task("tokentree.run_job", args=[job_id], queue=f"tokentree.model.{MODEL}")
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    assert_same_tree(
        api.get(f"/v1/jobs/{job_id}/tree").json(), cli_tree(tmp_path, MODEL_SOURCE, prompt, **SMALL)
    )
    celery.close()


def test_cancel_mid_job_keeps_the_partial_tree(
    api: httpx.Client,
    solo: WorkerProcess,
    workers: Workers,
    session_factory: sessionmaker[Session],
    redis_client: redis.Redis,
    stop_ids: set[int],
) -> None:
    job_id = submit(api, PROMPT, **BIG)
    wait_for(api, job_id, lambda j: j["progress"]["nodes"] >= 300, workers=workers)
    response = api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    time.sleep(2.0)  # the worker stops at its next step, and writes nothing after the cancel
    nodes = api.get(f"/v1/jobs/{job_id}").json()["progress"]["nodes"]
    time.sleep(2.0)
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["progress"]["nodes"] == nodes >= 300
    assert job["progress"]["frontier"] > 0  # partial: open nodes were left
    tree = api.get(f"/v1/jobs/{job_id}/tree")
    assert tree.status_code == 200 and tree.json()["tree"]["child_count"] > 0
    with session_factory() as session:
        counts = assert_follows_rule(session, job_id, TreeParams(**BIG), stop_ids)
        # The partial tree's probability mass, counted from its nodes as served: its open nodes are
        # leaves too.
        totals = tree_totals(session, job_id)
    coverage = tree.json()["metadata"]["coverage"]
    assert coverage["leaf_mass"] == pytest.approx(totals.coverage.leaf_mass, abs=1e-9)
    assert coverage["completed_mass"] == pytest.approx(totals.coverage.completed_mass, abs=1e-9)
    assert 0 < coverage["leaf_mass"] <= 1
    assert counts["nodes"] == nodes
    assert job_keys(redis_client, job_id) == []  # nothing of the job stays in Redis
    # The worker is free again: the next job runs.
    next_id = submit(api, PROMPT, max_nodes=50)
    assert wait_for(api, next_id, finished, workers=workers)["status"] == "succeeded"


def test_a_frontier_lost_with_redis_state_is_rebuilt_from_postgres(
    api: httpx.Client,
    solo: WorkerProcess,
    workers: Workers,
    session_factory: sessionmaker[Session],
    redis_client: redis.Redis,
    stop_ids: set[int],
) -> None:
    params = WIDE
    job_id = submit(api, PROMPT, **params)
    wait_for(api, job_id, lambda j: j["progress"]["nodes"] >= 300, workers=workers)
    lost = job_keys(redis_client, job_id)
    assert lost, "the running job has a frontier in Redis"
    redis_client.delete(*lost)  # what a Redis restart without persistence does to it
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    with session_factory() as session:
        counts = assert_follows_rule(session, job_id, TreeParams(**params), stop_ids)
    assert counts["nodes"] == job["progress"]["nodes"] == params["max_nodes"]


def test_a_logprobs_job_gives_the_engines_record(
    api: httpx.Client, solo: WorkerProcess, workers: Workers, redis_client: redis.Redis
) -> None:
    prompt = PROMPT
    job_id = submit(api, prompt, kind="logprobs", max_new_tokens=30, top_k=5)
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    record = json.loads(api.get(f"/v1/jobs/{job_id}/logprobs.jsonl").text)
    want = analyze_logprobs(
        load_model(ModelSpec(name=MODEL_SOURCE)), prompt, LogprobsParams(max_new_tokens=30)
    )
    assert record["response"] == want["response"]
    assert [s["token"] for s in record["data"]] == [s["token"] for s in want["data"]]
    for got, expected in zip(record["data"], want["data"], strict=True):
        assert got["logprob"] == pytest.approx(expected["logprob"], abs=1e-4)
    assert_no_keys_left(redis_client, job_id)  # its claim and the claim's count went with it


def test_a_score_job_gives_the_engines_record(
    api: httpx.Client, solo: WorkerProcess, workers: Workers, redis_client: redis.Redis
) -> None:
    """A chat prompt, a forced prefix and the prompt's own tokens scored too: the engine's record."""
    prompt, prefix, text = "Tell me a story", "Once upon a time", ", there was a little car."
    parameters = {"top_k": 3, "include_prompt": True}
    response = api.post("/v1/jobs", json={"prompt": prompt, "model": MODEL, "kind": "score", "text": text,
                                          "chat": True, "prefix": prefix, "parameters": parameters})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    record = json.loads(api.get(f"/v1/jobs/{job_id}/logprobs.jsonl").text)
    want = score_text(load_model(ModelSpec(name=MODEL_SOURCE)), prompt, text, ScoreParams(**parameters),
                      chat=True, prefix=prefix)
    assert (record["response"], record["text"]) == (prefix + text, text)
    assert [(s["token_id"], s["rank"], s["part"]) for s in record["data"]] == [
        (s["token_id"], s["rank"], s["part"]) for s in want["data"]]
    for got, expected in zip(record["data"], want["data"], strict=True):
        assert got["logprob"] == pytest.approx(expected["logprob"], abs=1e-4)
    assert record["totals"]["text"]["sum_logprob"] == pytest.approx(want["totals"]["text"]["sum_logprob"])
    assert record["metadata"]["model"] == MODEL
    assert_no_keys_left(redis_client, job_id)
