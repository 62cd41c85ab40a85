"""The worker's settings (`TOKENTREE_WORKER_*`): the one place their defaults live.

Units of work read them (`Services.config`); the `tokentree worker` command sets some of these through
the environment of the processes it starts; the embedded worker passes its own values.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_worker_name() -> str:
    """The host and this process's id: unique among the live workers of a host."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(BaseSettings):
    """The worker's own knobs (`TOKENTREE_WORKER_*`); the `tokentree worker` command sets some."""

    model_config = SettingsConfigDict(env_prefix="TOKENTREE_WORKER_", extra="ignore", frozen=True)

    name: str = Field(default_factory=default_worker_name)
    models: str = ""  # comma-separated allow-list names this worker serves; empty: all of them
    threads: int = 0  # torch CPU threads; 0: torch's default
    preload: bool = True  # load the models when the worker starts, not on its first job
    # Units of work run at once (Celery's thread pool): their trees step together on the model.
    units: int = Field(default=32, ge=1, le=256)
    hold_limit: int = Field(default=0, ge=0)  # 0: 4 x max_batch (`Services.hold_limit`)
    unit_seconds: float = Field(default=20.0, gt=0)  # a unit's wall-clock bound
    lease_ttl_s: float = Field(default=8.0, gt=0)  # a silent unit's nodes go back to the queue after this
    max_attempts: int = Field(default=3, ge=1)  # a node in flight in this many dead units fails its job
    split_min: int = Field(default=16, ge=1)  # never hand an idle peer fewer nodes than this
    split_cooldown_s: float = Field(default=1.0, ge=0)  # after a hand-off, let the peer pick it up
    sweep_interval_s: float = Field(default=2.0, gt=0)
    stale_after_s: float = Field(default=15.0, gt=0)
    visibility_timeout_s: int = Field(default=600, ge=60)
    # A unit that fails because Postgres or Redis is unreachable waits this long at most for them to answer
    # again (checking with exponential backoff), then runs again; below the visibility timeout.
    outage_wait_s: float = Field(default=300.0, ge=0)
    # The worker's heartbeat key in Redis (models/worker_registry.py) lives this long past its last beat:
    # a worker that stops beating (killed, wedged) counts as gone after it, and its name is free again.
    heartbeat_ttl_s: float = Field(default=10.0, gt=0)
    # The same key while the worker starts (Celery, the runtime, before the first beat).
    startup_ttl_s: float = Field(default=120.0, gt=0)

    def served_models(self, allowed: Iterable[str]) -> list[str]:
        """The allow-list names this worker serves (`models`, else all of them)."""
        allowed = list(allowed)
        names = [m.strip() for m in self.models.split(",") if m.strip()]
        unknown = [m for m in names if m not in allowed]
        if unknown:
            raise ValueError(f"model {unknown[0]!r} is not in the allow-list ({', '.join(allowed)})")
        return names or allowed
