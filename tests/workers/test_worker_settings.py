"""One settings class for the worker: WorkerSettings (TOKENTREE_WORKER_*) is what a unit of work reads."""

from __future__ import annotations

import os

import pytest

from tokentree.models.settings import Settings
from tokentree.workers.frontier import MemoryFrontier
from tokentree.workers.service import ModelRegistry, Services
from tokentree.workers.settings import WorkerSettings


def services(worker: WorkerSettings, settings: Settings) -> Services:
    return Services(config=worker, max_batch=settings.max_batch, session_factory=None,  # type: ignore[arg-type]
                    frontier=MemoryFrontier(), models=ModelRegistry(settings))


def test_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENTREE_"):
            monkeypatch.delenv(name)
    settings = Settings()
    worker = WorkerSettings(name="w")
    assert worker.lease_ttl_s == 8.0  # what the distributed workers have always used
    assert services(worker, settings).hold_limit == 4 * settings.max_batch


def test_the_settings_follow_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTREE_WORKER_LEASE_TTL_S", "3")
    monkeypatch.setenv("TOKENTREE_WORKER_SPLIT_COOLDOWN_S", "0.25")
    monkeypatch.setenv("TOKENTREE_WORKER_HOLD_LIMIT", "0")
    monkeypatch.setenv("TOKENTREE_MAX_BATCH", "32")
    worker = WorkerSettings(name="w")
    assert (worker.lease_ttl_s, worker.split_cooldown_s) == (3.0, 0.25)
    assert services(worker, Settings()).hold_limit == 128
    assert services(WorkerSettings(name="w", hold_limit=5), Settings()).hold_limit == 5
