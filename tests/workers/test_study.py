"""A small study on Postgres with a real `tokentree worker` process behind the API, through
`tokentree.Client`: every job of the study succeeds, each tree exactly the one built in-process for its
prompt and parameters, and the study's forks and nodes agree with those trees."""

from __future__ import annotations

import json

import httpx
import pandas as pd

import tokentree
from bench.trees import assert_same_tree
from tests.workers.conftest import MODEL, MODEL_SOURCE, Workers

PARAMETER_SETS = [{"max_nodes": 40, "max_completed_paths": 5}, {"max_nodes": 25, "max_completed_paths": 3}]
PROMPTS = ["The capital of Japan is", "I like"]


def test_a_study_runs_on_a_worker_and_its_trees_are_the_rule(api: httpx.Client, workers: Workers) -> None:
    workers.start("study-worker")
    with tokentree.Client(str(api.base_url)) as client:
        study = client.submit_study("on a worker", prompts=PROMPTS, models=[MODEL],
                                    parameter_sets=PARAMETER_SETS)
        done = client.wait(study, timeout=300, progress=False)
        assert done.progress.by_status["succeeded"] == 4, done
        assert done.jobs is not None
        for job in done.jobs:
            served = api.get(f"/v1/jobs/{job.id}/tree").json()
            parameters = {name: job.parameters[name] for name in ("max_nodes", "max_completed_paths")}
            built = tokentree.build_tree(job.prompt, MODEL_SOURCE, progress=False, **parameters)
            assert_same_tree(served, json.loads(built.to_json()))

        forks = client.forks(done, by="unexplored_mass", limit=50)
        assert isinstance(forks, pd.DataFrame) and len(forks) > 0
        assert list(forks["unexplored_mass"]) == sorted(forks["unexplored_mass"], reverse=True)
        for fork in forks.itertuples():
            tree = client.tree(fork.job_id)
            node = next(n for n in tree.nodes if n.id == fork.node_id)
            children = [tree.nodes[c] for c in node.children]
            assert len(children) == fork.branches > 1
            # (the tree JSON shows probabilities to 4 decimals; the database keeps them whole)
            assert abs(fork.unexplored_mass - max(0.0, 1 - sum(c.prob for c in children))) < 1e-4

        nodes = client.study_nodes(done)
        assert len(nodes) == done.progress.nodes == sum(job.progress.nodes for job in done.jobs)
        assert set(nodes["prompt"]) == set(PROMPTS) and set(nodes["model"]) == {MODEL}
