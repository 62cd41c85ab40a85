"""Real services for the worker tests: the session's Postgres and Redis (tests/conftest.py), emptied
when the worker tests begin, the API served over HTTP, and real `tokentree worker` processes.

The model is the bundled demo model; TOKENTREE_TEST_MODEL points at another folder while it is built.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.utils.cli import REPO_ROOT, cli_command, cli_env
from tests.utils.databases import empty_tables
from tests.utils.redis_server import RedisServer
from tests.utils.servers import live_api_for
from tokentree.models.db import make_session_factory
from tokentree.models.settings import Settings

MODEL_SOURCE = os.environ.get("TOKENTREE_TEST_MODEL", "demo")
MODEL = "demo"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here needs the real Postgres and Redis (`-m "not services"` leaves them out)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="package", autouse=True)
def empty_at_start(pg_engine: Engine, redis_server: RedisServer) -> None:
    """The worker tests begin on an empty database and Redis: a worker's sweeper would take up any job
    that the API's tests left open (and tasks they left queued)."""
    empty_tables(pg_engine)
    redis_server.flush()


@pytest.fixture(scope="session")
def session_factory(pg_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(pg_engine)


@pytest.fixture(scope="module")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(str(settings.redis_url))
    yield client
    client.close()


@pytest.fixture(scope="session")
def settings(postgres_url: str, redis_server: RedisServer) -> Settings:
    """The session's Postgres and Redis (not flushed between tests: a module's workers outlive them)."""
    return Settings(database_url=postgres_url, redis_url=f"{redis_server.url}/0", environment="local",
                    models={MODEL: MODEL_SOURCE})


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `tokentree worker` (or `serve`) on `settings`' Postgres and Redis."""
    return cli_env(**{
        "TOKENTREE_DATABASE_URL": str(settings.database_url),
        "TOKENTREE_REDIS_URL": str(settings.redis_url),
        "TOKENTREE_MODELS": f"{MODEL}={MODEL_SOURCE}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **extra,
    })


# -- worker processes ---------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, nothing given back; what it held must be taken over."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Workers:
    settings: Settings
    tmp: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, name: str, *, wait: bool = True, models: str | None = None,
              **knobs: str) -> WorkerProcess:
        """`tokentree worker --model demo --name NAME` as a subprocess; waits until it takes work. `models`:
        its own allow-list (TOKENTREE_MODELS), else the demo's entry."""
        env = service_env(self.settings, **{f"TOKENTREE_WORKER_{k.upper()}": v for k, v in knobs.items()})
        if models is not None:
            env["TOKENTREE_MODELS"] = models
        env.setdefault("TOKENTREE_WORKER_LEASE_TTL_S", "3")
        env.setdefault("TOKENTREE_WORKER_SWEEP_INTERVAL_S", "0.5")
        env.setdefault("TOKENTREE_WORKER_STALE_AFTER_S", "4")
        log_path = self.tmp / f"worker-{name}.log"
        command = cli_command("worker", "--model", MODEL, "--name", name, "--threads", "1",
                              "--loglevel", "info")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(name, process, log_path)
        self.started.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def start_many(self, *names: str, **knobs: str) -> list[WorkerProcess]:
        """Start several workers at once (they load the model side by side); wait until all take work."""
        started = [self.start(name, wait=False, **knobs) for name in names]
        for worker in started:
            self.wait_ready(worker)
        return started

    def wait_ready(self, worker: WorkerProcess, timeout: float = 180) -> None:
        client = redis.Redis.from_url(str(self.settings.redis_url))
        deadline = time.monotonic() + timeout
        try:
            while client.zscore(f"tokentree:model:{MODEL}:idle", worker.name) is None:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"worker {worker.name} exited:\n{worker.log()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"worker {worker.name} not ready in {timeout}s:\n{worker.log()[-3000:]}"
                    )
                time.sleep(0.2)
        finally:
            client.close()

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.started:
            try:
                worker.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.started.clear()


@pytest.fixture(scope="module")
def workers(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """The worker processes a test module starts; all stopped when the module is done."""
    pool = Workers(settings, tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()


# -- the API over HTTP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[httpx.Client]:
    with live_api_for(settings, session_factory=session_factory) as served:
        yield served.client


def submit(api: httpx.Client, prompt: str, kind: str = "tree", **parameters: Any) -> str:
    body = {"prompt": prompt, "model": MODEL, "kind": kind, "parameters": parameters}
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def wait_for(
    api: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 240,
    workers: Workers | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.log()[-4000:]}" for w in (workers.started if workers else []))
            raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}\n{logs}")
        time.sleep(0.25)


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def job_keys(client: redis.Redis, job_id: str) -> list[str]:
    """The job's keys in Redis."""
    return sorted(_text(k) for k in client.keys(f"tokentree:job:{job_id}:*"))


def assert_no_keys_left(client: redis.Redis, job_id: str, within_s: float = 10.0) -> None:
    """Nothing of the finished job stays in Redis: its frontier, leases and
    claims are cleared as it ends; the sweeper's short-lived marks ("sent") expire within seconds."""
    deadline = time.monotonic() + within_s
    while left := job_keys(client, job_id):
        assert time.monotonic() < deadline, f"left in Redis for job {job_id}: {left}"
        time.sleep(0.25)


def unacked_job_ids(client: redis.Redis) -> set[str]:
    """The jobs of the task messages Celery holds as delivered and not yet acknowledged (kombu's
    `unacked` hash: a worker runs them, or died running them and they wait for the visibility timeout)."""
    ids: set[str] = set()
    for raw in client.hvals("unacked"):
        message = json.loads(raw)[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        ids.update(str(arg) for arg in args)
    return ids


def idle_workers(client: redis.Redis) -> set[str]:
    """The workers of the model that say they wait for work."""
    return {_text(n) for n in client.zrange(f"tokentree:model:{MODEL}:idle", 0, -1)}


@pytest.fixture(scope="session")
def stop_ids() -> set[int]:
    from tokentree.engine.loading import ModelSpec, load_model

    return set(load_model(ModelSpec(name=MODEL_SOURCE)).stop_ids)
