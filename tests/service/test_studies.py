"""/v1/studies over HTTP, in both modes (embedded on SQLite, and Postgres with Celery on Redis): a study's
jobs made together and then sent, its request checked field by field, ownership with API keys, caps and
quotas, cancel and delete, fork points ranked on hand-made trees, and the nodes read back with pandas.
"""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, update

from bench.factories import RecordingDispatcher, insert_tree, make_job
from tests.utils.servers import LiveAPI, embedded_settings, live_api_for, postgres_settings
from tokentree.engine.params import TreeParams
from tokentree.engine.tree import Candidate
from tokentree.engine.tree import Node as TreeNode
from tokentree.migrations import upgrade_database
from tokentree.models import api_keys, jobs
from tokentree.models.db import make_session_factory
from tokentree.models.schema import Job, NodeRow, Study

StartAPI = Callable[..., LiveAPI]
STUDY = {"name": "animals", "template": "The {animal} sat on the",
         "values": [{"animal": "cat"}, {"animal": "dog"}, {"animal": "owl"}],
         "parameter_sets": [{"max_nodes": 50}, {"max_nodes": 80, "max_completed_paths": 3}]}


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.services)])
def start_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartAPI]:
    """Starts the API with settings of the test's choosing, in each mode: embedded (SQLite, a recording
    dispatcher) and distributed (the session's Postgres, emptied; tasks through Celery to Redis)."""
    with ExitStack() as stack:
        def start(dispatcher: RecordingDispatcher | None = None, **overrides: Any) -> LiveAPI:
            if request.param == "embedded":
                settings = embedded_settings(tmp_path / uuid.uuid4().hex, **overrides)
                upgrade_database(settings.sqlalchemy_url)
                return stack.enter_context(live_api_for(settings, dispatcher or RecordingDispatcher()))
            engine: Engine = request.getfixturevalue("clean_pg")
            settings = postgres_settings(request.getfixturevalue("postgres_url"),
                                         request.getfixturevalue("redis_url"), **overrides)
            return stack.enter_context(live_api_for(settings, dispatcher,
                                                    session_factory=make_session_factory(engine)))

        yield start


@pytest.fixture
def api(start_api: StartAPI) -> LiveAPI:
    return start_api()


def submit(api: LiveAPI, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
    response = api.client.post("/v1/studies", json=body or STUDY, headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def refusal(api: LiveAPI, body: dict[str, Any]) -> dict[str, Any]:
    """The one 422 error of submitting `body` (its `loc` and `msg`)."""
    response = api.client.post("/v1/studies", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert len(errors) == 1, errors
    return errors[0]


def counts(api: LiveAPI) -> tuple[int, int]:
    with api.session() as session:
        return (session.scalar(select(func.count()).select_from(Study)) or 0,
                session.scalar(select(func.count()).select_from(Job)) or 0)


def new_token(api: LiveAPI, name: str) -> str:
    with api.session() as session:
        return api_keys.create_key(session, name).token


# -- submit -------------------------------------------------------------------------------------------


def test_a_study_is_every_combination_made_together_then_sent(api: LiveAPI) -> None:
    study = submit(api)
    assert study["name"] == "animals" and study["done"] is False
    made = study["jobs"]
    # prompts, then models, then parameter sets; every parameter set completed with the defaults
    assert [(job["prompt"], job["parameters"]["max_nodes"]) for job in made] == [
        (f"The {animal} sat on the", size) for animal in ("cat", "dog", "owl") for size in (50, 80)]
    assert made[1]["parameters"] == {**TreeParams().to_dict(), "max_nodes": 80, "max_completed_paths": 3}
    assert {job["status"] for job in made} == {"queued"}
    assert {job["study_id"] for job in made} == {study["id"]}
    assert study["progress"] == {"jobs": 6, "nodes": 0, "completed_paths": 0,
                                 "by_status": {"queued": 6, "running": 0, "succeeded": 0, "failed": 0,
                                               "cancelled": 0}}
    assert study["request"]["template"] == STUDY["template"]
    if api.mode == "embedded":  # every job's task was sent, in the study's order
        assert api.dispatcher.submitted == [(job["id"], "demo") for job in made]
    # its jobs are jobs like any other, and say which study they belong to
    listed = api.client.get("/v1/jobs").json()
    assert listed["total"] == 6 and {job["study_id"] for job in listed["items"]} == {study["id"]}
    assert api.client.get(f"/v1/studies/{study['id']}").json()["jobs"] == made


def test_a_list_of_prompts_and_several_models(start_api: StartAPI) -> None:
    api = start_api(models={"demo": "demo", "other": "demo"})
    study = submit(api, {"name": "two models", "prompts": ["Once upon a time", "The capital of France is"],
                         "models": ["demo", "other"], "kind": "logprobs", "chat": True, "prefix": "Well"})
    asked = [(job["prompt"], job["model"], job["kind"], job["chat"], job["prefix"]) for job in study["jobs"]]
    prompts = ("Once upon a time", "The capital of France is")
    models = ("demo", "other")
    assert asked == [(prompt, model, "logprobs", True, "Well") for prompt in prompts for model in models]


def test_mistakes_name_their_field_and_store_nothing(start_api: StartAPI) -> None:
    api = start_api(study_max_jobs=5)
    missing = refusal(api, {**STUDY, "values": [{"animal": "cat"}, {"bird": "owl"}]})
    assert missing["loc"] == ["body", "values", 1] and "{animal}" in missing["msg"]
    assert refusal(api, {**STUDY, "template": "The {animal.name} sat"})["loc"] == ["body", "template"]
    assert refusal(api, {**STUDY, "template": "The {} sat"})["loc"] == ["body", "template"]
    assert refusal(api, {**STUDY, "template": "The {animal sat"})["loc"] == ["body", "template"]
    assert refusal(api, {"name": "x", "template": "The {animal}"})["loc"] == ["body", "values"]
    assert refusal(api, {"name": "x"})["loc"] == ["body", "prompts"]
    assert refusal(api, {**STUDY, "prompts": ["a"]})["loc"] == ["body", "template"]
    too_big = refusal(api, STUDY)  # 3 prompts x 1 model x 2 parameter sets = 6 jobs > 5
    assert too_big["loc"] == ["body", "values"] and "= 6 jobs; at most 5" in too_big["msg"]
    prompts = {"name": "x", "prompts": ["fine", "   ", "fine too"]}
    assert refusal(api, prompts)["loc"] == ["body", "prompts", 1]
    assert refusal(api, {**prompts, "prompts": ["a", ""]})["loc"] == ["body", "prompts", 1]
    bad_set = refusal(api, {**STUDY, "values": [{"animal": "cat"}],
                            "parameter_sets": [{"max_nodes": 10}, {"max_nodes": 0}]})
    assert bad_set["loc"] == ["body", "parameter_sets", 1, "max_nodes"]
    over_cap = refusal(api, {"name": "x", "prompts": ["a"], "parameter_sets": [{"max_nodes": 10**9}]})
    assert over_cap["loc"][:3] == ["body", "parameter_sets", 0]
    unknown = refusal(api, {"name": "x", "prompts": ["a"], "models": ["demo", "gpt-99"]})
    assert unknown["loc"] == ["body", "models", 1] and "not served here" in unknown["msg"]
    assert refusal(api, {"name": " ", "prompts": ["a"]})["loc"] == ["body", "name"]
    # Kept with the study as JSON even where the template does not use it: refused, not a database error.
    unused_nul = refusal(api, {**STUDY, "values": [{"animal": "cat", "note": "a\u0000b"}]})
    assert unused_nul["loc"] == ["body", "values", 0] and "NUL" in unused_nul["msg"]
    assert refusal(api, {"name": "x", "prompts": ["a"], "surprise": 1})["loc"] == ["body", "surprise"]
    assert counts(api) == (0, 0)


def test_a_template_value_may_be_a_number(api: LiveAPI) -> None:
    study = submit(api, {"name": "years", "template": "In {year}, {who} said",
                         "values": [{"year": 1969, "who": "Armstrong"}, {"year": 2.5, "who": "{x}"}]})
    assert [job["prompt"] for job in study["jobs"]] == ["In 1969, Armstrong said", "In 2.5, {x} said"]


def test_the_same_idempotency_key_replays_the_study(api: LiveAPI) -> None:
    headers = {"Idempotency-Key": "study-1"}
    first = api.client.post("/v1/studies", json=STUDY, headers=headers)
    again = api.client.post("/v1/studies", json=STUDY, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    other = api.client.post("/v1/studies", json={**STUDY, "name": "other"}, headers=headers)
    assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert counts(api) == (1, 6)


def test_a_queue_that_refuses_fails_the_unsent_jobs_visibly(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    upgrade_database(settings.sqlalchemy_url)
    with live_api_for(settings, RecordingDispatcher(fail_submit=True)) as api:
        response = api.client.post("/v1/studies", json=STUDY)
        assert response.status_code == 503 and "queue is unavailable" in response.json()["detail"]
        study = api.client.get("/v1/studies").json()["items"][0]
        assert study["progress"]["by_status"]["failed"] == 6 and study["done"] is True
        listed = api.client.get("/v1/jobs").json()["items"]
        assert all("could not queue the job: broker down" in job["error"] for job in listed)


# -- ownership, lists and quotas ------------------------------------------------------------------------


def test_a_study_belongs_to_its_key(start_api: StartAPI) -> None:
    api = start_api(max_active_studies_per_key=1)
    alice, bob = new_token(api, "alice"), new_token(api, "bob")
    study = submit(api, token=alice)
    path = f"/v1/studies/{study['id']}"
    for method, url in (("GET", path), ("POST", f"{path}/cancel"), ("DELETE", path), ("GET", f"{path}/forks"),
                        ("GET", f"{path}/nodes"), ("GET", f"{path}/nodes?format=parquet")):
        answer = api.client.request(method, url, headers=bearer(bob))
        assert answer.status_code == 404 and "not found" in answer.json()["detail"], (method, url)
    assert api.client.get("/v1/studies", headers=bearer(bob)).json() == {"items": [], "total": 0}
    assert api.client.get("/v1/studies", headers=bearer(alice)).json()["total"] == 1
    assert api.client.get(path, headers=bearer(alice)).status_code == 200
    assert api.client.get(path).status_code == 200  # anonymous: no restriction, as for jobs
    # one open study per key here: a second is a 429; another key's is not affected
    second = api.client.post("/v1/studies", json=STUDY, headers=bearer(alice))
    assert second.status_code == 429 and "1 studies with queued or running jobs" in second.json()["detail"]
    submit(api, token=bob)
    # a study's jobs do not use up the key's quota of single jobs
    single = api.client.post("/v1/jobs", json={"prompt": "Hello"}, headers=bearer(alice))
    assert single.status_code == 201, single.text
    api.client.post(f"{path}/cancel", headers=bearer(alice))
    submit(api, token=alice)  # its study ended: room for the next


def test_the_list_pages_newest_first(start_api: StartAPI) -> None:
    api = start_api(max_page_size=2)
    made = [submit(api, {"name": f"s{index}", "prompts": ["a"]})["id"] for index in range(3)]
    first = api.client.get("/v1/studies?limit=2").json()
    assert first["total"] == 3 and [s["id"] for s in first["items"]] == made[::-1][:2]
    assert first["items"][0]["jobs"] is None and first["items"][0]["progress"]["jobs"] == 1
    assert [s["id"] for s in api.client.get("/v1/studies?limit=2&offset=2").json()["items"]] == made[:1]
    too_many = api.client.get("/v1/studies?limit=3")
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["query", "limit"]
    assert api.client.get("/v1/studies/not-an-id").status_code == 422
    assert api.client.get(f"/v1/studies/{uuid.uuid4()}").status_code == 404


# -- cancel and delete ----------------------------------------------------------------------------------


def test_cancel_stops_the_open_jobs_and_keeps_the_ended(api: LiveAPI) -> None:
    study = submit(api)
    done, running = study["jobs"][0]["id"], study["jobs"][1]["id"]
    with api.session() as session:
        jobs.mark_running(session, done, "w")
        jobs.finish_job(session, done, "succeeded")
        jobs.mark_running(session, running, "w")
    cancelled = api.client.post(f"/v1/studies/{study['id']}/cancel").json()
    assert cancelled["done"] is True
    assert cancelled["progress"]["by_status"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0,
                                                  "cancelled": 5}
    statuses = {job["id"]: job["status"] for job in cancelled["jobs"]}
    assert statuses[done] == "succeeded" and statuses[running] == "cancelled"
    assert all(job["finished_at"] for job in cancelled["jobs"])
    again = api.client.post(f"/v1/studies/{study['id']}/cancel")  # nothing left to stop: the same study
    assert again.status_code == 200 and again.json()["progress"] == cancelled["progress"]


def test_delete_removes_the_study_its_jobs_and_their_nodes(api: LiveAPI) -> None:
    study, other = submit(api), submit(api, {"name": "kept", "prompts": ["Hello"]})
    for job in (study["jobs"][0], other["jobs"][0]):
        with api.session() as session:
            insert_tree(session, uuid.UUID(job["id"]), fork_tree("p", [(1.0, [(" a", 0.5), (" b", 0.4)])]))
    assert api.client.delete(f"/v1/studies/{study['id']}").status_code == 204
    assert api.client.get(f"/v1/studies/{study['id']}").status_code == 404
    assert api.client.get(f"/v1/jobs/{study['jobs'][0]['id']}").status_code == 404
    with api.session() as session:
        assert session.scalar(select(func.count()).select_from(NodeRow)) == 3  # the other study's tree
    assert counts(api) == (1, 1)
    assert api.client.delete(f"/v1/studies/{study['id']}").status_code == 404


# -- fork points ----------------------------------------------------------------------------------------


def fork_tree(prompt: str, levels: list[tuple[float, list[tuple[str, float]]]]) -> list[TreeNode]:
    """A hand-made tree: a chain where each level's first child is expanded next. Each level is (the
    expanded node's entropy, its children as (text, prob)); its candidates are its children, then a rival."""
    root = TreeNode(id=0, parent_id=None, token_id=None, text=prompt, depth=0, prob=1.0, logprob=0.0,
                    cumulative_prob=1.0)
    nodes = [root]
    parent = root
    for entropy, children in levels:
        parent.threshold, parent.queue_depth, parent.entropy = 0.1, 0, entropy
        parent.candidates = [Candidate(token_id=100 + index, text=text, prob=prob)
                             for index, (text, prob) in enumerate(children)]
        parent.candidates.append(Candidate(token_id=99, text=" rival", prob=0.01))
        first = None
        for index, (text, prob) in enumerate(children):
            child = TreeNode(id=len(nodes), parent_id=parent.id, token_id=100 + index, text=text,
                             depth=parent.depth + 1, prob=prob, logprob=math.log(prob),
                             cumulative_prob=parent.cumulative_prob * prob)
            nodes.append(child)
            first = first or child
        assert first is not None
        parent = first
    return nodes


def test_forks_are_ranked_by_how_undecided_the_model_was(api: LiveAPI) -> None:
    # A forced prefix is part of every path's text (the trees below are hand-made without it).
    study = submit(api, {"name": "forks", "prompts": ["The cat sat on the", "I like"], "prefix": " Well,"})
    cat, like = (uuid.UUID(job["id"]) for job in study["jobs"])
    with api.session() as session:
        cat_ids = insert_tree(session, cat, fork_tree("The cat sat on the", [
            (1.0, [(" mat", 0.6), (" floor", 0.3)]),             # root: 2 branches, 0.1 left unexplored
            (2.5, [(".", 0.5), (",", 0.2), (" and", 0.1)]),      # " mat": 3 branches, 0.2 left
            (3.0, [("\n", 0.9)]),                                # ".": one child, not a fork
        ]))
        like_ids = insert_tree(session, like, fork_tree("I like", [(0.5, [(" a", 0.45), (" b", 0.05)])]))
        outsider = make_job(session, prompt="Not in the study")  # its fork must not show
        insert_tree(session, outsider.id, fork_tree("x", [(9.0, [(" y", 0.5), (" z", 0.5)])]))

    def ranked(by: str | None = None, limit: int = 20) -> list[tuple[str, int]]:
        query = f"?limit={limit}" + (f"&by={by}" if by else "")
        answer = api.client.get(f"/v1/studies/{study['id']}/forks{query}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["by"] == (by or "entropy")
        return [(fork["job_id"], fork["node_id"]) for fork in answer.json()["forks"]]

    cat_root, cat_mat = (str(cat), cat_ids[0]), (str(cat), cat_ids[1])
    like_root = (str(like), like_ids[0])
    assert ranked() == [cat_mat, cat_root, like_root]
    assert ranked("entropy", limit=2) == [cat_mat, cat_root]
    assert ranked("branches") == [cat_mat, cat_root, like_root]  # ties: the higher entropy first
    assert ranked("unexplored_mass") == [like_root, cat_mat, cat_root]

    forks = api.client.get(f"/v1/studies/{study['id']}/forks").json()["forks"]
    mat = forks[0]
    assert (mat["prompt"], mat["path_text"], mat["depth"]) == ("The cat sat on the", " Well, mat", 1)
    assert mat["branches"] == 3
    assert mat["entropy"] == 2.5 and mat["unexplored_mass"] == pytest.approx(0.2)
    assert mat["model"] == "demo" and mat["parameters"]["max_nodes"] == TreeParams().max_nodes
    assert [(c["text"], c["prob"]) for c in mat["candidates"]] == [(".", 0.5), (",", 0.2), (" and", 0.1),
                                                                   (" rival", 0.01)]
    assert forks[1]["path_text"] == " Well," and forks[2]["unexplored_mass"] == pytest.approx(0.5)

    # the mass a worker recorded at the expansion counts over the one summed from the children
    with api.session() as session:
        session.execute(update(NodeRow).where(NodeRow.id == cat_ids[0]).values(unexplored_mass=0.9))
        session.commit()
    assert ranked("unexplored_mass") == [cat_root, like_root, cat_mat]

    wrong = api.client.get(f"/v1/studies/{study['id']}/forks?by=surprise")
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["query", "by"]
    over = api.client.get(f"/v1/studies/{study['id']}/forks?limit=100000")
    assert over.status_code == 422 and over.json()["detail"][0]["loc"] == ["query", "limit"]


# -- export ---------------------------------------------------------------------------------------------


def written_study(api: LiveAPI) -> tuple[dict[str, Any], list[list[int]]]:
    study = submit(api, {"name": "export", "prompts": ["The cat sat on the", "I like"],
                         "parameter_sets": [{"max_nodes": 40}, {"max_nodes": 60}]})
    written = []
    with api.session() as session:
        for index, job in enumerate(study["jobs"]):
            levels = [(1.0, [(" mat", 0.6), (" floor, \"quoted\"\n", 0.3)])] * (index + 1)
            written.append(insert_tree(session, uuid.UUID(job["id"]), fork_tree(job["prompt"], levels)))
    return study, written


def check_table(table: pd.DataFrame, study: dict[str, Any], written: list[list[int]]) -> None:
    assert len(table) == sum(len(ids) for ids in written)
    assert list(table.columns[:3]) == ["job_id", "prompt", "model"]
    assert {"max_nodes", "min_branch_threshold", "node_id", "parent_id", "text", "prob", "cumulative_prob",
            "entropy", "candidates"} <= set(table.columns)
    for job, ids in zip(study["jobs"], written, strict=True):
        rows = table[table["job_id"] == job["id"]]
        assert list(rows["node_id"]) == ids  # job after job, each by node id
        assert set(rows["prompt"]) == {job["prompt"]} and set(rows["model"]) == {"demo"}
        assert set(rows["max_nodes"]) == {job["parameters"]["max_nodes"]}
    first = table[table["job_id"] == study["jobs"][0]["id"]]
    assert first.iloc[0]["text"] == "The cat sat on the" and first.iloc[0]["entropy"] == 1.0
    assert first.iloc[2]["text"] == " floor, \"quoted\"\n" and first.iloc[2]["prob"] == pytest.approx(0.3)


def test_nodes_as_csv_read_back_with_pandas(api: LiveAPI) -> None:
    study, written = written_study(api)
    with api.client.stream("GET", f"/v1/studies/{study['id']}/nodes?format=csv") as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        body = answer.read()
    check_table(pd.read_csv(io.BytesIO(body), keep_default_na=False, na_values=[""]), study, written)
    default = api.client.get(f"/v1/studies/{study['id']}/nodes")  # CSV unless asked otherwise
    assert default.content == body


def test_nodes_as_parquet_read_back_with_pandas(api: LiveAPI) -> None:
    study, written = written_study(api)
    answer = api.client.get(f"/v1/studies/{study['id']}/nodes?format=parquet")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/vnd.apache.parquet"
    table = pd.read_parquet(io.BytesIO(answer.content))
    check_table(table, study, written)
    assert table["max_nodes"].dtype == "int64" and table["is_finished"].dtype == bool
    empty = submit(api, {"name": "empty", "prompts": ["a"]})  # no nodes yet: an empty table with its columns
    nothing = pd.read_parquet(io.BytesIO(
        api.client.get(f"/v1/studies/{empty['id']}/nodes?format=parquet").content))
    assert len(nothing) == 0 and "cumulative_prob" in nothing.columns
    wrong = api.client.get(f"/v1/studies/{study['id']}/nodes?format=xlsx")
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["query", "format"]


def test_a_parquet_export_is_capped(start_api: StartAPI) -> None:
    api = start_api(study_parquet_max_rows=5)
    study, _ = written_study(api)
    answer = api.client.get(f"/v1/studies/{study['id']}/nodes?format=parquet")
    assert answer.status_code == 413 and "format=csv" in answer.json()["detail"]
    assert api.client.get(f"/v1/studies/{study['id']}/nodes?format=csv").status_code == 200
