"""`tokentree worker`: its checks, and `--processes` running several worker processes under one command."""

from __future__ import annotations

import signal
import subprocess
import time

import redis

from tests.utils.cli import REPO_ROOT, cli_command
from tests.workers.conftest import idle_workers, service_env
from tokentree.models.settings import Settings


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_worker_needs_postgres_and_redis(settings: Settings) -> None:
    env = service_env(settings)
    del env["TOKENTREE_REDIS_URL"]
    done = run("worker", env=env)
    assert done.returncode == 2
    assert "TOKENTREE_REDIS_URL" in done.stderr and "Traceback" not in done.stderr


def test_the_worker_serves_only_models_of_the_allow_list(settings: Settings) -> None:
    done = run("worker", "--model", "not-a-model", env=service_env(settings))
    assert done.returncode == 2
    assert "not-a-model" in done.stderr


def test_processes_start_one_worker_each_and_stop_together(
    settings: Settings, redis_client: redis.Redis
) -> None:
    env = service_env(settings, TOKENTREE_WORKER_SWEEP_INTERVAL_S="0.5")
    parent = subprocess.Popen(
        cli_command("worker", "--processes", "2", "--name", "duo", "--loglevel", "warning"),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        names: set[str] = set()
        while names != {"duo-1", "duo-2"}:
            assert parent.poll() is None, parent.stderr.read().decode() if parent.stderr else ""
            assert time.monotonic() < deadline, f"ready: {names}"
            time.sleep(0.3)
            names = {n for n in idle_workers(redis_client) if n.startswith("duo-")}
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
    # Both went away cleanly: a stopping worker takes itself off the idle list.
    assert not {n for n in idle_workers(redis_client) if n.startswith("duo-")}
