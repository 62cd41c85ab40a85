"""An allow-list entry's loading options (`name=source;dtype=bf16;quantize=4bit`) reach the worker: its
ModelRegistry loads the model with them, and a `tokentree worker` process runs jobs on it that way."""

from __future__ import annotations

import subprocess

import httpx
import pytest
import redis

from engine.loading import ModelLoadError, ModelSpec
from models import worker_registry
from models.settings import Settings
from tests.workers.conftest import (
    MODEL,
    MODEL_SOURCE,
    REPO_ROOT,
    WorkerProcess,
    Workers,
    cli,
    finished,
    service_env,
    submit,
    wait_for,
)
from tests.workers.trees import PROMPT, SMALL
from workers.service import ModelRegistry


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
    env = service_env(workers.settings, TOKENTREE_MODELS=f"{MODEL}={MODEL_SOURCE};dtype=bf16",
                      TOKENTREE_WORKER_NAME="bf16-worker")
    log_path = workers.tmp / "worker-bf16.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(cli("worker", "--threads", "1"), env=env, cwd=REPO_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
    worker = WorkerProcess("bf16-worker", process, log_path)
    workers.started.append(worker)
    workers.wait_ready(worker)
    assert worker_registry.holder_of(redis_client, "bf16-worker") is not None  # TOKENTREE_WORKER_NAME counts
    job_id = submit(api, PROMPT, **SMALL)
    job = wait_for(api, job_id, finished, workers=workers)
    assert job["status"] == "succeeded", job
    metadata = api.get(f"/v1/jobs/{job_id}/tree").json()["metadata"]
    assert metadata["dtype"] == "bfloat16"
    worker.stop()
