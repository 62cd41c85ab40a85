"""GET /v1/compare over HTTP: the report equals the engine's comparison of the same trees, and every
refusal (ownership, bad or unknown ids, running jobs, jobs without a tree or of another kind, different
prompts, trees over the size cap) is what the jobs' routes would answer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bench.factories import RecordingDispatcher, insert_tree, synthetic_tree
from tests.reliability.conftest import bearer, new_token, service_settings
from tests.service.test_api import TREE_REQUEST, set_status, submit
from tests.utils.servers import LiveAPI, embedded_settings, live_api_for
from tokentree.api.routes.compare import MAX_TOP
from tokentree.engine.compare import compare_trees
from tokentree.engine.tree import tree_json_text
from tokentree.migrations import upgrade_database
from tokentree.tree import Tree

# Two trees of one prompt: the smaller is nearly the larger's first levels (same seed), so they share
# most of it; the first is 300 nodes, the second 200.
SIZES = (300, 200)
SEED = 5


def finished_tree_job(api: LiveAPI, size: int, headers: dict[str, str] | None = None, **changes: Any
                      ) -> dict[str, Any]:
    response = api.client.post("/v1/jobs", json={**TREE_REQUEST, **changes}, headers=headers or {})
    assert response.status_code == 201, response.text
    job = response.json()
    with api.session() as session:
        insert_tree(session, uuid.UUID(job["id"]), synthetic_tree(size, seed=SEED))
    set_status(api, job["id"], "succeeded")
    return job


def compare(api: LiveAPI, a: str, b: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    return api.client.get("/v1/compare", params={"a": a, "b": b, **params}, headers=headers or {})


def test_the_report_is_the_engines_comparison_of_the_stored_trees(live_api: LiveAPI) -> None:
    job_a = finished_tree_job(live_api, SIZES[0])
    job_b = finished_tree_job(live_api, SIZES[1], parameters={**TREE_REQUEST["parameters"], "max_nodes": 200})
    response = compare(live_api, job_a["id"], job_b["id"], top=MAX_TOP)
    assert response.status_code == 200, response.text
    report = response.json()

    # What `tokentree compare` finds in the same trees' files (their candidates rounded as stored).
    meta = {"prompt": TREE_REQUEST["prompt"]}
    tree_a, tree_b = (Tree.from_json(tree_json_text(synthetic_tree(size, seed=SEED), meta)) for size in SIZES)
    expected = compare_trees(tree_a.nodes, meta, tree_b.nodes, meta).to_json()
    for key in ("prompt", "measure", "shared_nodes", "only_a", "only_b", "shared_expanded"):
        assert report[key] == expected[key], key
    assert report["shared_nodes"] > 100 and report["only_a"] >= 100  # a real overlap, and a real difference
    assert (report["a"], report["b"]) == ({"nodes": SIZES[0], "job": job_a["id"]},
                                          {"nodes": SIZES[1], "job": job_b["id"]})
    assert report["differences"] == {"parameters.max_nodes": [500, 200]}
    # The same disagreements, largest first (node ids differ: the service's are database ids).
    got = [(d["tokens"], d["distance"], d["a"], d["b"]) for d in report["disagreements"]]
    want = [(d["tokens"], d["distance"], d["a"], d["b"]) for d in expected["disagreements"]]
    assert got == want and len(got) == report["shared_expanded"] > 0
    assert [d[1] for d in got] == sorted((d[1] for d in got), reverse=True)
    assert (report["parting"] is None) == (expected["parting"] is None)
    if expected["parting"] is not None:
        assert report["parting"]["tokens"] == expected["parting"]["tokens"]
    # The ids are the jobs' own: the top disagreement's node is in job a's tree.
    top = report["disagreements"][0]
    tree = live_api.client.get(f"/v1/jobs/{job_a['id']}/tree").json()["tree"]
    ids, stack = set(), [tree]
    while stack:
        node = stack.pop()
        ids.add(node["id"])
        stack.extend(node["children"])
    assert top["a_node"] in ids
    # `top` keeps the largest.
    two = compare(live_api, job_a["id"], job_b["id"], top=2).json()
    assert two["disagreements"] == report["disagreements"][:2]


def test_refusals_name_the_field_or_say_what_is_wrong(live_api: LiveAPI) -> None:
    done = finished_tree_job(live_api, 50)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"a": "not-an-id", "b": done["id"]}, 422, "a"),
        ({"a": done["id"]}, 422, "b"),
        ({"a": done["id"], "b": done["id"], "top": MAX_TOP + 1}, 422, "top"),
    ]
    for params, code, field in cases:
        response = live_api.client.get("/v1/compare", params=params)
        assert response.status_code == code, response.text
        assert response.json()["detail"][0]["loc"] == ["query", field]

    unknown = str(uuid.uuid4())
    response = compare(live_api, done["id"], unknown)
    assert response.status_code == 404 and unknown in response.json()["detail"]

    running = submit(live_api)
    set_status(live_api, running["id"], "running")
    response = compare(live_api, running["id"], done["id"])
    assert response.status_code == 409 and "running" in response.json()["detail"]

    logprobs = submit(live_api, kind="logprobs", parameters={})
    response = compare(live_api, done["id"], logprobs["id"])
    assert response.status_code == 409 and "not a tree job" in response.json()["detail"]

    empty = submit(live_api)
    set_status(live_api, empty["id"], "failed", error="the worker died")
    response = compare(live_api, done["id"], empty["id"])
    assert response.status_code == 409 and "no tree" in response.json()["detail"]

    other_prompt = finished_tree_job(live_api, 50, prompt="Once upon a time")
    response = compare(live_api, done["id"], other_prompt["id"])
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "b"] and "different prompts" in error["msg"]


def test_trees_over_the_size_cap_are_refused(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, compare_max_nodes=100)
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher()) as api:
        small, large = finished_tree_job(api, 100), finished_tree_job(api, 101)
        assert compare(api, small["id"], small["id"]).status_code == 200
        response = compare(api, small["id"], large["id"])
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", "b"] and "TOKENTREE_COMPARE_MAX_NODES" in error["msg"]


@pytest.mark.services
def test_a_key_compares_only_its_own_jobs(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    _, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    with live_api_for(service_settings(postgres_url, redis_url, require_api_key=True)) as api:
        alices = [finished_tree_job(api, size, bearer(alice))["id"] for size in SIZES]
        bobs = finished_tree_job(api, 100, bearer(bob))["id"]
        assert compare(api, *alices, headers=bearer(alice)).status_code == 200
        assert compare(api, *alices).status_code == 401  # no key
        for a, b, field in ((alices[0], bobs, alices[0]), (bobs, alices[1], alices[1])):
            response = compare(api, a, b, headers=bearer(bob))  # another key's job is not found
            assert response.status_code == 404 and field in response.json()["detail"]
