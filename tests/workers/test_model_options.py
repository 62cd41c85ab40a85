"""An allow-list entry's loading options (`name=source;dtype=bf16;quantize=4bit`) reach the worker: its
ModelRegistry loads the model with them, and a `tokentree worker` process runs jobs on it that way."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from tests.workers.conftest import MODEL, MODEL_SOURCE, Workers, finished, submit, wait_for
from tests.workers.trees import PROMPT, SMALL, WIDE, assert_follows_rule
from tokentree.engine.loading import ModelLoadError, ModelSpec
from tokentree.engine.params import TreeParams
from tokentree.models import worker_registry
from tokentree.models.settings import Settings
from tokentree.workers.service import ModelRegistry


def test_the_registry_loads_each_entry_with_its_options() -> None:
    settings = Settings(models=f"{MODEL}={MODEL_SOURCE};dtype=bf16,plain={MODEL_SOURCE},"
                               f"quant={MODEL_SOURCE};quantize=4bit;device=cuda",  # type: ignore[arg-type]
                        dtype="fp32")
    registry = ModelRegistry(settings)
    assert registry.spec(MODEL) == ModelSpec(name=MODEL_SOURCE, dtype="bf16", device="auto")
    assert registry.spec("plain") == ModelSpec(name=MODEL_SOURCE, dtype="fp32", device="auto")
    assert registry.spec("quant") == ModelSpec(name=MODEL_SOURCE, dtype="fp32", device="cuda",
                                               quantization="4bit")
    assert registry.get(MODEL).dtype == "bfloat16"
    assert registry.get("plain").dtype == "float32"
    import torch

    if not torch.cuda.is_available():  # the engine's own refusal, reached through the entry's options
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            registry.get("quant")


def test_a_worker_process_loads_the_entry_with_its_options(
    workers: Workers, api: httpx.Client, redis_client: redis.Redis
) -> None:
    worker = workers.start("bf16-worker", models=f"{MODEL}={MODEL_SOURCE};dtype=bf16")
    assert worker_registry.holder_of(redis_client, "bf16-worker") is not None
    job_id = submit(api, PROMPT, **SMALL)
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    metadata = api.get(f"/v1/jobs/{job_id}/tree").json()["metadata"]
    assert metadata["dtype"] == "bfloat16"
    beat = worker_registry.holder_of(redis_client, "bf16-worker")
    assert beat is not None and metadata["model_fingerprint"] == beat.fingerprints[MODEL]
    worker.stop()


def _job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}")
    response.raise_for_status()
    return dict(response.json())


def test_a_worker_with_another_model_under_the_jobs_name_refuses_its_nodes(
    workers: Workers, api: httpx.Client, redis_client: redis.Redis, session_factory: sessionmaker[Session],
    stop_ids: set[int],
) -> None:
    """A rolling upgrade: `demo` means fp32 weights to the worker that started the job and bf16 ones to
    the worker left. The job waits, saying why, rather than being finished by a second model."""
    first = workers.start("fp32-first")
    params = {**WIDE, "max_nodes": 6000}
    job_id = submit(api, PROMPT, **params)
    wait_for(api, job_id, lambda job: job["progress"]["nodes"] > 200, workers=workers)
    first.stop()  # a warm stop gives its nodes back: the job is open, with nodes waiting
    stopped_at = _job(api, job_id)["progress"]["nodes"]
    assert _job(api, job_id)["status"] == "running"

    other = workers.start("bf16-other", models=f"{MODEL}={MODEL_SOURCE};dtype=bf16")
    beat = worker_registry.holder_of(redis_client, "bf16-other")
    assert beat is not None and beat.fingerprints[MODEL]
    # Its sweeper sends the job's work to the model's queue, which it alone reads: it takes the job's units
    # and refuses each. Without the check it would grow the tree within a second.
    time.sleep(8)
    job = _job(api, job_id)
    assert job["progress"]["nodes"] == stopped_at, "a worker with another model expanded the job's nodes"
    assert job["status"] == "running"
    assert f"{MODEL} fingerprinted" in (job["warning"] or ""), job["warning"]
    assert beat.fingerprints[MODEL] in job["warning"]

    workers.start("fp32-second")  # the job's own model again: it finishes the tree
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    assert job["warning"] is None
    assert "bf16-other" not in (job["progress"]["workers"] or {})
    tree = api.get(f"/v1/jobs/{job_id}/tree").json()
    assert tree["metadata"]["model_fingerprint"] != beat.fingerprints[MODEL]
    assert tree["metadata"]["dtype"] == "float32"
    with session_factory() as session:
        counts = assert_follows_rule(session, job_id, TreeParams.from_dict(params), stop_ids)
    assert counts["nodes"] == job["progress"]["nodes"]
    other.stop()
