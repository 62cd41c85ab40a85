"""POST /v1/jobs/{id}/expand over HTTP: a recorded candidate becomes a child with absolute probabilities,
the growth is recorded and the job sent to the workers again as a submission is; "this node, more"
re-opens a leaf; every refusal (ownership, a job still open or of another kind, a node not in the job, a
token not recorded or a child already, "more" on a stop leaf, bad parameters, the cap on growths, the
key's quota of open jobs) is the right status naming the field, and leaves the tree as it was."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from bench.factories import RecordingDispatcher
from tests.reliability.conftest import bearer, new_token, service_settings
from tests.service.test_api import queued_tasks, set_status, submit
from tests.service.test_compare_api import finished_tree_job
from tests.utils.servers import LiveAPI, embedded_settings, live_api_for
from tokentree.migrations import upgrade_database
from tokentree.models.schema import NodeRow

Tree = dict[str, Any]


def nodes_of(tree: Tree) -> list[Tree]:
    found, stack = [], [tree["tree"]]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node["children"])
    return sorted(found, key=lambda n: n["id"])


def tree_of(api: LiveAPI, job_id: str, headers: dict[str, str] | None = None) -> Tree:
    response = api.client.get(f"/v1/jobs/{job_id}/tree", headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def unexplored(node: Tree) -> list[Tree]:
    """The node's recorded candidates that are not its children."""
    children = {c["token_id"] for c in node["children"]}
    return [c for c in node["candidates"] if c["token_id"] not in children]


def expand(api: LiveAPI, job_id: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return api.client.post(f"/v1/jobs/{job_id}/expand", json=body, headers=headers or {})


def dispatched(api: LiveAPI, job_id: str) -> int:
    """How many times the job was sent to the workers (Celery messages on Postgres, else the stand-in's)."""
    if api.mode == "postgres" or api.settings.redis_url:
        return sum(1 for m in queued_tasks(api) if job_id in str(m))
    return sum(1 for sent, _ in api.dispatcher.submitted if sent == job_id)


def test_a_candidate_becomes_a_child_and_the_job_runs_again(live_api: LiveAPI) -> None:
    job = finished_tree_job(live_api, 60)
    before = tree_of(live_api, job["id"])
    parent = next(n for n in nodes_of(before) if n["depth"] >= 2 and unexplored(n))
    candidate = unexplored(parent)[0]
    sent_before = dispatched(live_api, job["id"])

    response = expand(live_api, job["id"], node_id=parent["id"], token_id=candidate["token_id"],
                      parameters={"max_nodes": 40})
    assert response.status_code == 200, response.text
    grown = response.json()
    assert grown["status"] == "queued" and grown["finished_at"] is None
    [growth] = grown["growths"]
    shown = ("node_id", "token_id", "by", "nodes_before", "nodes_after", "prob_source")
    assert {k: growth[k] for k in shown} == {
        "node_id": parent["id"], "token_id": candidate["token_id"], "by": None, "nodes_before": 60,
        "nodes_after": None, "prob_source": "rounded prob"}  # the synthetic candidates have no logprob
    assert growth["parameters"]["max_nodes"] == 40
    assert growth["parameters"]["max_completed_paths"] == job["parameters"]["max_completed_paths"]
    assert growth["at"].startswith(grown["created_at"][:4])  # the database's clock, ISO 8601
    assert dispatched(live_api, job["id"]) == sent_before + 1  # sent as a submission is

    after = tree_of(live_api, job["id"])
    assert after["metadata"]["growths"] == grown["growths"]
    new = next(n for n in nodes_of(after) if n["id"] == growth["start_node_id"])
    old_parent = next(n for n in nodes_of(after) if n["id"] == parent["id"])
    assert new in old_parent["children"] and new["token_id"] == candidate["token_id"]
    assert new["text"] == candidate["text"] and new["depth"] == parent["depth"] + 1
    assert new["prob"] == candidate["prob"] and math.isclose(new["logprob"], math.log(candidate["prob"]))
    assert math.isclose(new["cumulative_prob"], parent["cumulative_prob"] * candidate["prob"], rel_tol=1e-12)
    assert not new["is_finished"] and new["threshold"] is None  # open: the workers grow it
    assert math.isclose(old_parent["unexplored_mass"] or 0.0, max(0.0, (parent["unexplored_mass"] or 0.0)
                                                                  - candidate["prob"]), abs_tol=1e-9)
    listed = live_api.client.get("/v1/jobs").json()["items"]
    assert next(j for j in listed if j["id"] == job["id"])["status"] == "queued"
    assert live_api.client.get(f"/v1/jobs/{job['id']}").json()["progress"]["nodes"] == 61


def test_more_reopens_a_leaf_a_limit_left(live_api: LiveAPI) -> None:
    job = finished_tree_job(live_api, 40)
    leaf = next(n for n in nodes_of(tree_of(live_api, job["id"]))
                if not n["children"] and not n["is_finished"])
    with live_api.session() as session:  # one leaf cut at the depth limit
        session.execute(update(NodeRow).where(NodeRow.id == leaf["id"])
                        .values(is_finished=True, finish_reason="max_depth"))
        session.commit()
    response = expand(live_api, job["id"], node_id=leaf["id"])
    assert response.status_code == 200, response.text
    [growth] = response.json()["growths"]
    assert (growth["token_id"], growth["start_node_id"], growth["prob_source"]) == (None, leaf["id"], None)
    reopened = next(n for n in nodes_of(tree_of(live_api, job["id"])) if n["id"] == leaf["id"])
    assert (reopened["is_finished"], reopened["finish_reason"]) == (False, None)


def test_refusals_name_the_field_and_change_nothing(live_api: LiveAPI) -> None:
    job = finished_tree_job(live_api, 60)
    tree = tree_of(live_api, job["id"])
    nodes = nodes_of(tree)
    parent = next(n for n in nodes if n["children"] and unexplored(n))
    stop_leaf = next(n for n in nodes if n["finish_reason"] == "stop")
    other = finished_tree_job(live_api, 20)
    other_node = nodes_of(tree_of(live_api, other["id"]))[1]
    child_token = parent["children"][0]["token_id"]

    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"node_id": 10**12, "token_id": 5}, "node_id", "not in job"),
        ({"node_id": other_node["id"], "token_id": 5}, "node_id", "not in job"),  # another job's node
        ({"node_id": parent["id"], "token_id": 7}, "token_id", "not among the node's recorded candidates"),
        ({"node_id": parent["id"], "token_id": child_token}, "token_id", "a child of the node already"),
        ({"node_id": stop_leaf["id"]}, "node_id", "stop token"),
        ({"node_id": parent["id"]}, "node_id", "expanded already"),
        ({"node_id": stop_leaf["id"], "token_id": 5}, "token_id", "no candidates"),
        ({"node_id": parent["id"], "token_id": unexplored(parent)[0]["token_id"],
          "parameters": {"max_nodes": 0}}, "parameters", "max_nodes"),
        ({"node_id": parent["id"], "token_id": 5, "parameters": {"max_nodez": 3}}, "parameters", "max_nodez"),
        ({"node_id": "one"}, "node_id", ""),
        ({"token_id": 5}, "node_id", ""),
    ]
    for body, field, words in cases:
        response = expand(live_api, job["id"], **body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["detail"][0]
        assert error["loc"][:2] == ["body", field], (body, error)
        assert words in error["msg"] or words in str(error["loc"]), (body, error)
    assert tree_of(live_api, job["id"]) == tree  # nothing written
    assert live_api.client.get(f"/v1/jobs/{job['id']}").json()["growths"] == []

    unknown = str(uuid.uuid4())
    assert expand(live_api, unknown, node_id=1, token_id=1).status_code == 404
    running = submit(live_api)
    set_status(live_api, running["id"], "running")
    response = expand(live_api, running["id"], node_id=1, token_id=1)
    assert response.status_code == 409 and "still running" in response.json()["detail"]
    queued = submit(live_api)
    response = expand(live_api, queued["id"], node_id=1, token_id=1)
    assert response.status_code == 409 and "still queued" in response.json()["detail"]
    logprobs = submit(live_api, kind="logprobs", parameters={})
    set_status(live_api, logprobs["id"], "succeeded")
    response = expand(live_api, logprobs["id"], node_id=1, token_id=1)
    assert response.status_code == 409 and "not a tree job" in response.json()["detail"]

    # Grown once, the job is queued again: a second growth waits for it to end.
    token = unexplored(parent)[0]["token_id"]
    assert expand(live_api, job["id"], node_id=parent["id"], token_id=token).status_code == 200
    response = expand(live_api, job["id"], node_id=parent["id"], token_id=unexplored(parent)[1]["token_id"])
    assert response.status_code == 409 and "still queued" in response.json()["detail"]


def test_growths_per_job_are_capped(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, max_growths_per_job=2)
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher()) as api:
        job = finished_tree_job(api, 60)
        parent = next(n for n in nodes_of(tree_of(api, job["id"])) if len(unexplored(n)) >= 3)
        for candidate in unexplored(parent)[:2]:
            response = expand(api, job["id"], node_id=parent["id"], token_id=candidate["token_id"])
            assert response.status_code == 200, response.text
            with api.session() as session:  # the growth's run ends
                from tokentree.models import jobs

                jobs.finish_job(session, job["id"], "succeeded")
        response = expand(api, job["id"], node_id=parent["id"], token_id=unexplored(parent)[2]["token_id"])
        assert response.status_code == 409 and "TOKENTREE_MAX_GROWTHS_PER_JOB" in response.json()["detail"]
        assert len(api.client.get(f"/v1/jobs/{job['id']}").json()["growths"]) == 2


@pytest.mark.services
def test_a_key_grows_only_its_own_jobs(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    alice_id, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    settings = service_settings(postgres_url, redis_url, require_api_key=True, max_active_jobs_per_key=1)
    with live_api_for(settings) as api:
        job = finished_tree_job(api, 60, bearer(alice))
        second = finished_tree_job(api, 60, bearer(alice))
        parent = next(n for n in nodes_of(tree_of(api, job["id"], bearer(alice))) if unexplored(n))
        body = {"node_id": parent["id"], "token_id": unexplored(parent)[0]["token_id"]}
        assert expand(api, job["id"], **body).status_code == 401  # no key
        response = expand(api, job["id"], bearer(bob), **body)  # another key's job is not found
        assert response.status_code == 404 and job["id"] in response.json()["detail"]
        response = expand(api, job["id"], bearer(alice), **body)
        assert response.status_code == 200, response.text
        assert response.json()["growths"][0]["by"] == str(alice_id)
        # Open again, the grown job counts towards the key's quota of open jobs, as a submission does.
        response = expand(api, second["id"], bearer(alice), **body)
        assert response.status_code == 429 and "queued or running jobs" in response.json()["detail"]
        assert api.client.get(f"/v1/jobs/{second['id']}", headers=bearer(alice)).json()["growths"] == []
