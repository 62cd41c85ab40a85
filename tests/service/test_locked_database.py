"""A table locked by someone else (a migration, an operator's `LOCK TABLE`) makes the API answer 503 within
its lock timeout, health included, instead of holding every request thread until the lock goes; once it
goes, everything answers again."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.utils.servers import live_api_for, postgres_settings
from tokentree.models import jobs
from tokentree.models.db import api_engine, make_session_factory

pytestmark = pytest.mark.services


def test_a_locked_jobs_table_is_a_quick_503_not_a_hung_request(
    postgres_url: str, redis_url: str, clean_pg: Engine
) -> None:
    with make_session_factory(clean_pg)() as session:
        job_id = jobs.create_job(session, kind="tree", prompt="p", model="demo", parameters={}).id
    settings = postgres_settings(postgres_url, redis_url, db_lock_timeout_s=1.0)
    engine = api_engine(settings)
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with clean_pg.connect() as connection, connection.begin():
            connection.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock, daemon=True)
    try:
        with live_api_for(settings, session_factory=make_session_factory(engine)) as api:
            assert api.client.get("/healthz").status_code == 200
            holder.start()
            assert locked.wait(10)
            for path in ("/healthz", "/v1/jobs", f"/v1/jobs/{job_id}"):
                started = time.monotonic()
                response = api.client.get(path)
                took = time.monotonic() - started
                assert response.status_code == 503, (path, response.text)
                assert took < 3.0, (path, took)  # the lock timeout (1 s), not the lock's holder
            assert api.client.get("/healthz").json()["database"] == "unreachable"
            release.set()
            holder.join(10)
            assert api.client.get("/healthz").status_code == 200
            response = api.client.get(f"/v1/jobs/{job_id}")
            assert response.status_code == 200 and response.json()["status"] == "queued"
    finally:
        release.set()
        engine.dispose()
