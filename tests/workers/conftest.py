"""Real services for the worker tests: a Postgres database of their own (created, migrated, dropped),
a Redis database number of their own, the API served over HTTP, and real `tokentree worker` processes.

The model is the bundled demo model; TOKENTREE_TEST_MODEL points at another folder while it is built.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_engine, make_session_factory
from models.settings import Settings
from tests.utils.databases import fresh_database, fresh_redis

MODEL_SOURCE = os.environ.get("TOKENTREE_TEST_MODEL", "demo")
MODEL = "demo"
REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ")  # Celery's worker log format


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here needs the real Postgres and Redis (`-m "not services"` leaves them out)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database(f"tokentree_workers_test_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def session_factory(db_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(db_engine)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    # Not the number tests/service picks for the same pid (1 + pid % 15): both may run in one session.
    with fresh_redis(1 + (os.getpid() + 7) % 15) as url:
        yield url


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, environment="local", models={MODEL: MODEL_SOURCE}
    )


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTREE_")}
    env.update(
        TOKENTREE_DATABASE_URL=str(settings.database_url),
        TOKENTREE_REDIS_URL=str(settings.redis_url),
        TOKENTREE_MODELS=f"{MODEL}={MODEL_SOURCE}",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())", *args]


# -- worker processes ---------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines_about(self, job_id: str) -> list[tuple[float, str]]:
        """The log lines that name the job, with their times (seconds since the epoch)."""
        found = []
        for line in self.log().splitlines():
            stamp = LOG_STAMP.match(line)
            if stamp and job_id in line:
                at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
                found.append((at, line))
        return found

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
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                cli("worker", "--model", MODEL, "--name", name, "--threads", "1", "--loglevel", "info"),
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


@contextmanager
def serve(
    settings: Settings, dispatcher: Any = None, session_factory: sessionmaker[Session] | None = None
) -> Iterator[httpx.Client]:
    from api.app import create_app

    app = create_app(settings, dispatcher=dispatcher, session_factory=session_factory)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture(scope="module")
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[httpx.Client]:
    with serve(settings, session_factory=session_factory) as client:
        yield client


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
    from engine.loading import ModelSpec, load_model

    return set(load_model(ModelSpec(name=MODEL_SOURCE)).stop_ids)
