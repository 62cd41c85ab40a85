"""Workers by their own heartbeats in Redis (models/worker_registry.py): unique names by default, a live
worker's name refused to another, `tokentree status` and /metrics counting busy workers as alive, a job
whose model no live worker serves saying so, and `--gpus` refused without CUDA. Real `tokentree worker`
processes, the real Redis and Postgres."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from tests.utils.cli import REPO_ROOT, cli_command
from tests.utils.servers import live_api_for
from tests.workers.conftest import (
    MODEL,
    MODEL_SOURCE,
    WorkerProcess,
    Workers,
    service_env,
    wait_for,
)
from tests.workers.trees import PROMPT
from tokentree.cli.worker_cmd import celery_argv
from tokentree.models import worker_registry
from tokentree.models.queues import model_queue
from tokentree.models.settings import Settings
from tokentree.models.worker_registry import WorkerBeat

HOST = socket.gethostname()
UNSERVED = "nobody"  # in the API's allow-list, served by no worker
# A tree that keeps one worker busy for a minute or more (the test cancels it): a low threshold, deep, wide.
LONG: dict[str, Any] = {"min_branch_threshold": 0.01, "max_branch_threshold": 0.05,
                        "soft_queue_limit": 100_000, "max_depth": 500, "max_completed_paths": 1_000_000,
                        "max_nodes": 400_000}


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def live(client: redis.Redis) -> dict[str, WorkerBeat]:
    return {beat.name: beat for beat in worker_registry.live_workers(client)}


def eventually(check: Callable[[], Any], what: str, timeout: float = 180,
               workers: Workers | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.log()[-3000:]}" for w in (workers.started if workers else []))
            raise AssertionError(f"not within {timeout}s: {what}\n{logs}")
        time.sleep(0.25)
    return found


def start_unnamed(workers: Workers, label: str) -> WorkerProcess:
    """`tokentree worker --model demo` with no --name nor TOKENTREE_WORKER_NAME: the default name."""
    env = service_env(workers.settings, TOKENTREE_WORKER_SWEEP_INTERVAL_S="0.5")
    log_path = workers.tmp / f"worker-{label}.log"
    with log_path.open("wb") as log:
        command = cli_command("worker", "--model", MODEL, "--threads", "1", "--loglevel", "info")
        process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    worker = WorkerProcess(label, process, log_path)
    workers.started.append(worker)
    return worker


def celery_node_names(redis_url: str) -> set[str]:
    app = Celery("tokentree-test-ping", broker=redis_url, set_as_current=False)
    try:
        return {name for reply in app.control.ping(timeout=2.0) or [] for name in reply}
    finally:
        app.close()


def test_two_workers_on_one_host_get_distinct_names(workers: Workers, redis_client: redis.Redis) -> None:
    first, second = start_unnamed(workers, "anon-1"), start_unnamed(workers, "anon-2")
    pids = {first.process.pid, second.process.pid}

    def both_idle() -> dict[int, WorkerBeat]:
        mine = {b.pid: b for b in live(redis_client).values() if b.pid in pids and b.state == "idle"}
        return mine if set(mine) == pids else {}

    beats = eventually(both_idle, "both unnamed workers beat in Redis", workers=workers)
    # The worker became the `tokentree worker` process (exec): its name is this host and its pid.
    names = {pid: beat.name for pid, beat in beats.items()}
    assert names == {pid: f"{HOST}-{pid}" for pid in pids}
    assert all(beat.host == HOST and beat.models == (MODEL,) for beat in beats.values())
    # Celery's node names differ too (`-n NAME@%h`): both answer a ping under their own.
    expected = {f"{name}@{HOST}" for name in names.values()}
    eventually(lambda: expected <= celery_node_names(str(workers.settings.redis_url)),
               f"Celery nodes {expected} answer a ping", timeout=60)
    # The container healthcheck: alive by name; a name nobody has is not.
    env = service_env(workers.settings)
    done = run("worker", "--check", "--name", names[first.process.pid], env=env)
    assert done.returncode == 0, done.stderr
    assert f"1 worker(s) alive on {HOST}: {names[first.process.pid]} (idle)" in done.stdout
    done = run("worker", "--check", "--name", "not-running", env=env)
    assert done.returncode == 1 and "0 of 1 worker(s) alive" in done.stderr
    # A clean stop gives the names back at once, not after the TTL.
    first.stop()
    second.stop()
    assert first.process.returncode == 0 and second.process.returncode == 0
    assert not set(names.values()) & set(live(redis_client))


def test_a_live_workers_name_is_refused(workers: Workers, redis_client: redis.Redis) -> None:
    holder = workers.start("dup", heartbeat_ttl_s="3")
    env = service_env(workers.settings)
    started = time.monotonic()
    done = run("worker", "--model", MODEL, "--name", "dup", env=env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()  # one line, no traceback
    assert line == (f"tokentree: error: a live worker is already named 'dup' (pid {holder.process.pid} on "
                    f"{HOST}, idle); give this one another --name")
    assert time.monotonic() - started < 30  # refused before anything loads
    # A worker process that gets past the command (a race) is refused by its own claim (SET NX).
    worker_env = {**env, "TOKENTREE_WORKER_NAME": "dup", "TOKENTREE_WORKER_MODELS": MODEL}
    raced = subprocess.run(celery_argv(worker_env, [MODEL], "warning"), env=worker_env, cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=120, check=False)
    assert raced.returncode == 2, raced.stderr[-3000:]
    assert "tokentree: error: a live worker is already named 'dup'" in raced.stderr
    assert "Traceback" not in raced.stderr
    assert live(redis_client)["dup"].pid == holder.process.pid  # the live one kept its name
    # Killed, it beats no more: gone within its TTL (3 s), and the name is free again.
    holder.kill()
    eventually(lambda: "dup" not in live(redis_client), "the killed worker drops out", timeout=10)
    fresh = WorkerBeat(name="dup", models=(MODEL,), pid=holder.process.pid + 1_000_000)
    assert worker_registry.claim(redis_client, fresh, 5) is None
    worker_registry.release(redis_client, fresh)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_busy_workers_are_alive_and_unserved_models_say_so(
    workers: Workers, settings: Settings, redis_client: redis.Redis, session_factory: sessionmaker[Session]
) -> None:
    # The API allows a second model that no worker serves.
    api_settings = settings.model_copy(update={"models": {MODEL: MODEL_SOURCE, UNSERVED: MODEL_SOURCE},
                                               "max_nodes": LONG["max_nodes"]})
    status_env = service_env(settings, TOKENTREE_MODELS=f"{MODEL}={MODEL_SOURCE},{UNSERVED}={MODEL_SOURCE}")
    with live_api_for(api_settings, session_factory=session_factory) as served:
        api = served.client
        # No worker alive yet: every open job says so.
        small = {"max_nodes": 50}
        waiting = api.post("/v1/jobs", json={"prompt": PROMPT, "model": MODEL, "parameters": small})
        assert waiting.json()["warning"] == f"no live worker serves model {MODEL}"
        # One unit may last a minute: the worker stays busy, and so unable to answer a Celery ping.
        worker = workers.start("busy-1", unit_seconds="60")
        big = api.post("/v1/jobs", json={"prompt": PROMPT, "model": MODEL, "parameters": LONG}).json()["id"]
        unserved = api.post("/v1/jobs",
                            json={"prompt": PROMPT, "model": UNSERVED, "parameters": small}).json()
        assert unserved["warning"] == f"no live worker serves model {UNSERVED}"
        health = api.get("/healthz")  # the API works, and says which model's jobs wait for nobody
        assert health.status_code == 200
        # (Other tests of the session leave jobs of models nobody serves; this one's is among them.)
        assert health.json()["status"] == "degraded" and UNSERVED in health.json()["unserved_models"]
        assert MODEL not in health.json()["unserved_models"]
        wait_for(api, big, lambda j: j["status"] == "running" and j["progress"]["nodes"] >= 200,
                 workers=workers)

        def busy() -> bool:
            beat = live(redis_client).get("busy-1")
            return beat is not None and beat.state == "busy"

        eventually(busy, "busy-1 beats as busy", timeout=30, workers=workers)

        found = metric_samples(api.get("/metrics").text)
        assert found[("tokentree_workers_alive", ())] == 1
        assert found[("tokentree_model_workers", (("model", MODEL),))] == 1
        assert found[("tokentree_model_workers", (("model", UNSERVED),))] == 0

        done = run("status", env=status_env)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert "workers alive: 1" in lines
        [line] = [line for line in lines if line.startswith("  busy-1: ")]
        assert line.startswith(f"  busy-1: {MODEL} (busy; host {HOST}, pid {worker.process.pid}, last beat ")
        assert f"queues no live worker serves: {model_queue(UNSERVED)}" in lines
        job = api.get(f"/v1/jobs/{big}").json()
        assert job["status"] == "running" and job["warning"] is None  # still busy on it all along
        assert live(redis_client)["busy-1"].state == "busy"

        # Its model is served: the jobs waiting for it say nothing; the other model's job still warns.
        listed = {item["id"]: item["warning"] for item in api.get("/v1/jobs").json()["items"]}
        assert listed[waiting.json()["id"]] is None and listed[big] is None
        assert listed[unserved["id"]] == f"no live worker serves model {UNSERVED}"

        # The worker stops: the open demo jobs say so again; a finished job never warns.
        worker.stop()
        assert worker.process.returncode == 0
        job = api.get(f"/v1/jobs/{big}").json()
        assert job["status"] == "running" and job["warning"] == f"no live worker serves model {MODEL}"
        assert api.post(f"/v1/jobs/{big}/cancel").json()["warning"] is None
        found = metric_samples(api.get("/metrics").text)
        assert found[("tokentree_workers_alive", ())] == 0
        done = run("status", env=status_env)
        assert "workers alive: 0 (no worker heartbeat in Redis)" in done.stdout.splitlines()
        assert (f"queues no live worker serves: {model_queue(MODEL)}, {model_queue(UNSERVED)}"
                in done.stdout.splitlines())


def test_gpus_without_cuda_is_one_line_and_status_2(settings: Settings) -> None:
    import torch

    # On a machine with CUDA, a device number it does not have stands for the missing GPU.
    gpus = f"0,{torch.cuda.device_count()}" if torch.cuda.is_available() else "0,1"
    done = run("worker", "--gpus", gpus, env=service_env(settings), timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    if torch.cuda.is_available():
        assert line.startswith(f"tokentree: error: --gpus {gpus}: this machine has ")
    else:
        assert line.startswith(f"tokentree: error: --gpus {gpus}: no CUDA GPU is available here (torch ")
        assert line.endswith("run without --gpus to use the CPU")
    for bad in ("a,b", "0,0"):
        done = run("worker", "--gpus", bad, env=service_env(settings), timeout=60)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
