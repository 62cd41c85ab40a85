"""The test session's Postgres between tests: database names that no other run on this machine uses, and
the tables emptied. (The throwaway databases themselves are made by bench/postgres.py, which the
benchmarks share.)"""

from __future__ import annotations

import os

from sqlalchemy import Engine, text


def unique_suffix() -> str:
    # Several developers (and CI) run the suite on one machine at once: nothing may be shared.
    return f"{os.getpid()}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def empty_tables(engine: Engine) -> None:
    """No jobs, nodes, studies nor API keys left (the ids start again from 1)."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE nodes, jobs, studies, api_keys RESTART IDENTITY CASCADE"))
