"""The Python API's fixtures: the `tokentree tree` command's document for a prompt, and one embedded
service for the whole session (SQLite, the in-process worker running jobs for real, the API over HTTP).

The service allows one open event stream per caller, so that a test can see `Client.wait` fall back to
polling when its stream is refused; every other wait holds one stream at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.utils.cli import run_cli
from tests.utils.servers import LiveAPI, embedded_settings, live_api_for
from tokentree.migrations import upgrade_database
from tokentree.models.db import make_engine, make_session_factory
from tokentree.workers.local import LocalWorker

PROMPT = "Once upon a time"
# A small tree of the demo model, whole (about 200 nodes), and a wide one that runs long enough to be
# cancelled (over 14,000 nodes uncapped: tests/workers/trees.py's BIG).
SMALL: dict[str, Any] = {"max_nodes": 400, "max_completed_paths": 20}
BIG: dict[str, Any] = {"min_branch_threshold": 0.05, "max_branch_threshold": 0.3, "soft_queue_limit": 1000,
                       "max_depth": 60, "max_completed_paths": 1_000_000}


def cli_tree_text(out: Path, prompt: str, *flags: str, **parameters: Any) -> str:
    """What `tokentree tree PROMPT -o FILE` writes, with the parameters as flags."""
    args = ["tree", prompt, "-q", "-o", str(out), *flags]
    for name, value in parameters.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    done = run_cli(*args, timeout=300)
    assert done.returncode == 0, done.stderr
    return out.read_text(encoding="utf-8")


def without_timing(document: str) -> dict[str, Any]:
    """The document parsed, its wall-clock `seconds` zeroed (the one field two equal builds differ in)."""
    parsed: dict[str, Any] = json.loads(document)
    parsed["metadata"]["stats"]["seconds"] = 0
    return parsed


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAPI]:
    settings = embedded_settings(tmp_path_factory.mktemp("service"), events_max_per_caller=1)
    upgrade_database(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    factory = make_session_factory(engine)
    worker = LocalWorker(settings, factory, name="python-api-test")
    worker.start()
    try:
        with live_api_for(settings, worker, factory) as api:
            yield api
    finally:
        worker.stop()
        engine.dispose()
