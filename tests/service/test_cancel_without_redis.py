"""Cancelling and deleting a job need only Postgres: with the broker unreachable they still answer and
finish their work (a cancelled job's workers read its status at their next write), never half done."""

from __future__ import annotations

import socket
import uuid

import pytest
from sqlalchemy.engine import Engine

from tests.utils.servers import live_api_for, postgres_settings
from tokentree.models import jobs
from tokentree.models.db import make_session_factory

pytestmark = pytest.mark.services


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cancel_and_delete_answer_with_redis_down(postgres_url: str, clean_pg: Engine) -> None:
    factory = make_session_factory(clean_pg)
    with factory() as session:
        running = jobs.create_job(session, kind="tree", prompt="p", model="demo", parameters={}).id
        doomed = jobs.create_job(session, kind="tree", prompt="p", model="demo", parameters={}).id
        assert jobs.mark_running(session, running, "w") and jobs.mark_running(session, doomed, "w")
    settings = postgres_settings(postgres_url, f"redis://127.0.0.1:{closed_port()}/0")
    with live_api_for(settings, session_factory=factory) as api:
        response = api.client.post(f"/v1/jobs/{running}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert api.client.delete(f"/v1/jobs/{doomed}").status_code == 204
    with factory() as session:
        job = jobs.get_job(session, running)
        assert job is not None and job.status == "cancelled"
        assert jobs.get_job(session, uuid.UUID(str(doomed))) is None
