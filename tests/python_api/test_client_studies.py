"""`tokentree.Client`'s studies against the real embedded service (SQLite, the in-process worker running
the jobs, the API over HTTP): submit a study, wait for all its jobs, read its forks into pandas (each one
a real fork of the job's tree) and its nodes, and the API's refusals as `APIError`s."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

import tokentree
from tests.utils.servers import LiveAPI
from tokentree.studies import FORK_COLUMNS

STUDY_PARAMETERS = {"max_nodes": 60, "max_completed_paths": 5}


@pytest.fixture
def client(service: LiveAPI) -> Iterator[tokentree.Client]:
    with tokentree.Client(service.url) as client:
        yield client


def test_a_study_submitted_waited_for_and_its_forks_in_pandas(client: tokentree.Client) -> None:
    study = client.submit_study("capitals", template="The capital of {country} is",
                                values=[{"country": "France"}, {"country": "Japan"}],
                                parameter_sets=[STUDY_PARAMETERS, {**STUDY_PARAMETERS, "max_nodes": 30}])
    assert isinstance(study, tokentree.Study) and study.progress.jobs == 4 and study.jobs is not None
    france, japan = "The capital of France is", "The capital of Japan is"
    assert [job.prompt for job in study.jobs] == [france, france, japan, japan]
    assert {job.study_id for job in study.jobs} == {study.id}
    done = client.wait(study, timeout=300, progress=False)
    assert isinstance(done, tokentree.Study) and done.done
    assert done.progress.by_status["succeeded"] == 4 and done.progress.ended == 4
    assert done.progress.nodes == sum(job.progress.nodes for job in done.jobs or [])

    forks = client.forks(study, limit=10)
    assert isinstance(forks, pd.DataFrame) and list(forks.columns) == list(FORK_COLUMNS)
    assert 0 < len(forks) <= 10
    assert list(forks["entropy"]) == sorted(forks["entropy"], reverse=True)
    # each fork is a node of its job's tree with more than one child, reached by its path text
    top = forks.iloc[0]
    tree = client.tree(top["job_id"])
    node = next(n for n in tree.nodes if n.id == top["node_id"])
    assert len(node.children) == top["branches"] > 1
    assert top["prompt"] == tree.prompt and node.entropy == pytest.approx(top["entropy"])
    assert top["candidates"][0]["text"] == tree.nodes[node.children[0]].text
    by_branches = client.forks(study.id, by="branches", limit=5)
    assert list(by_branches["branches"]) == sorted(by_branches["branches"], reverse=True)

    nodes = client.study_nodes(study)
    assert len(nodes) == done.progress.nodes
    assert set(nodes["prompt"]) == {france, japan}
    assert set(nodes["max_nodes"]) == {60, 30}

    assert study.id in {listed.id for listed in client.studies()}
    client.delete_study(study)
    with pytest.raises(tokentree.APIError) as gone:
        client.study(study.id)
    assert gone.value.status == 404


def test_a_bad_study_is_an_api_error_naming_the_field(client: tokentree.Client) -> None:
    with pytest.raises(tokentree.APIError) as refused:
        client.submit_study("bad", template="The {animal} sat", values=[{"animal": "cat"}, {"bird": "owl"}])
    assert refused.value.status == 422
    assert refused.value.message.startswith("values.1: has no value for the template's field {animal}")


def test_a_study_wait_times_out_and_a_cancel_ends_it(client: tokentree.Client) -> None:
    big = {"min_branch_threshold": 0.05, "max_branch_threshold": 0.3, "soft_queue_limit": 1000,
           "max_depth": 60, "max_completed_paths": 1_000_000}
    study = client.submit_study("long", prompts=["Once upon a time", "The meaning of life is"],
                                parameter_sets=[big])
    with pytest.raises(tokentree.StudyTimeout) as waited:
        client.wait(study, timeout=1, progress=False)
    assert not waited.value.study.done
    cancelled = client.cancel_study(study)
    assert cancelled.done and cancelled.progress.by_status["cancelled"] >= 1
    assert client.wait(study, timeout=30, progress=False).done
