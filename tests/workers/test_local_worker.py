"""The embedded mode's in-process worker (`workers.local.LocalWorker`) on SQLite, behind the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from bench.trees import assert_same_tree
from tests.utils.servers import live_api_for
from tests.workers.conftest import MODEL, MODEL_SOURCE, finished, submit, wait_for
from tests.workers.trees import (
    BIG,
    PROMPT,
    SMALL,
    WIDE,
    assert_follows_rule,
    assert_same_coverage,
    cli_tree,
)
from tokentree.engine.params import TreeParams
from tokentree.migrations import upgrade_database
from tokentree.models import jobs
from tokentree.models.db import make_engine, make_session_factory
from tokentree.models.settings import Settings
from tokentree.workers.local import LocalWorker


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    settings = Settings(
        database_url=None,
        redis_url=None,
        data_dir=tmp_path,
        environment="local",
        models={MODEL: MODEL_SOURCE},
    )
    upgrade_database(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    yield settings, make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def local_api(embedded: tuple[Settings, sessionmaker[Session]]) -> Iterator[tuple[httpx.Client, LocalWorker]]:
    settings, factory = embedded
    worker = LocalWorker(settings, factory)
    worker.start()
    with live_api_for(settings, worker, session_factory=factory) as served:
        yield served.client, worker
    worker.stop()


@pytest.mark.parametrize("parameters", [SMALL, {**SMALL, "temperature": 1.3, "top_k_filter": 20}],
                         ids=["default", "sampled"])
def test_the_local_worker_builds_the_cli_tree(
    local_api: tuple[httpx.Client, LocalWorker], tmp_path: Path, parameters: dict
) -> None:
    api, _ = local_api
    job_id = submit(api, PROMPT, **parameters)
    job = wait_for(api, job_id, finished)
    assert job["status"] == "succeeded", job
    tree = api.get(f"/v1/jobs/{job_id}/tree").json()
    reference = cli_tree(tmp_path, MODEL_SOURCE, PROMPT, **parameters)
    assert_same_tree(tree, reference)
    assert_same_coverage(tree["metadata"], reference["metadata"])
    assert job["progress"]["workers"] == {"local": tree["metadata"]["stats"]["expanded"]}


def test_cancel_stops_the_local_worker_between_batches(
    local_api: tuple[httpx.Client, LocalWorker],
    embedded: tuple[Settings, sessionmaker[Session]],
    stop_ids: set[int],
) -> None:
    api, _ = local_api
    job_id = submit(api, PROMPT, **BIG)
    wait_for(api, job_id, lambda j: j["progress"]["nodes"] >= 300)
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    time.sleep(1.0)
    nodes = api.get(f"/v1/jobs/{job_id}").json()["progress"]["nodes"]
    time.sleep(1.0)
    assert api.get(f"/v1/jobs/{job_id}").json()["progress"]["nodes"] == nodes
    with embedded[1]() as session:
        assert assert_follows_rule(session, job_id, TreeParams(**BIG), stop_ids)["nodes"] == nodes
    # and it takes the next job
    assert wait_for(api, submit(api, PROMPT, max_nodes=50), finished)["status"] == "succeeded"


def test_a_job_interrupted_by_a_restart_finishes_as_the_cli_tree(
    embedded: tuple[Settings, sessionmaker[Session]], tmp_path: Path
) -> None:
    """Stopping the server mid-job and starting it again: the job resumes from the stored nodes."""
    settings, factory = embedded
    params = {**WIDE, "max_nodes": 2000}
    first = LocalWorker(settings, factory)
    with factory() as session:
        job_id = str(
            jobs.create_job(
                session,
                kind="tree",
                prompt=PROMPT,
                model=MODEL,
                parameters=TreeParams(**params).to_dict(),
            ).id
        )
    first.start()
    first.submit(job_id, MODEL)
    deadline = time.monotonic() + 120
    while _count(factory, job_id) < 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.stop()
    interrupted = _count(factory, job_id)
    with factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.status == "running"
    second = LocalWorker(settings, factory)
    second.start()  # picks the unfinished job up by itself
    with live_api_for(settings, second, session_factory=factory) as served:
        api = served.client
        job_out = wait_for(api, job_id, finished)
        assert job_out["status"] == "succeeded"
        assert interrupted < params["max_nodes"]
        assert_same_tree(
            api.get(f"/v1/jobs/{job_id}/tree").json(),
            cli_tree(tmp_path, MODEL_SOURCE, PROMPT, **params),
        )
    second.stop()


def _count(factory: sessionmaker[Session], job_id: str) -> int:
    with factory() as session:
        job = jobs.get_job(session, job_id)
        return 0 if job is None else job.node_count
