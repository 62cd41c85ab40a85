"""One settings class for the worker: WorkerSettings (TOKENTREE_WORKER_*) holds the defaults, and the
WorkerConfig a unit of work reads is built from it, with no defaults of its own."""

from __future__ import annotations

import dataclasses
import os

import pytest

from models.settings import Settings
from workers.service import WorkerConfig
from workers.settings import WorkerSettings


def test_the_config_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENTREE_"):
            monkeypatch.delenv(name)
    plain = WorkerConfig(name="w")
    built = WorkerConfig.of(Settings(), WorkerSettings(name="w"))
    assert plain == built
    defaults = WorkerSettings(name="w")
    for field in dataclasses.fields(WorkerConfig):
        if field.name in WorkerSettings.model_fields and field.name not in ("name", "hold_limit"):
            assert getattr(plain, field.name) == getattr(defaults, field.name), field.name
    assert plain.lease_ttl_s == 8.0  # what the distributed workers have always used
    assert plain.hold_limit == 4 * plain.max_batch == 4 * Settings().max_batch


def test_the_config_follows_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTREE_WORKER_LEASE_TTL_S", "3")
    monkeypatch.setenv("TOKENTREE_WORKER_SPLIT_COOLDOWN_S", "0.25")
    monkeypatch.setenv("TOKENTREE_WORKER_HOLD_LIMIT", "0")
    monkeypatch.setenv("TOKENTREE_MAX_BATCH", "32")
    config = WorkerConfig.of(Settings(), WorkerSettings(name="w"))
    assert (config.lease_ttl_s, config.split_cooldown_s) == (3.0, 0.25)
    assert (config.max_batch, config.hold_limit) == (32, 128)
    assert config.renew_every_s == 0.75
    assert WorkerConfig.of(Settings(), WorkerSettings(name="w"), hold_limit=5).hold_limit == 5
