"""A hung Redis (connections accepted, nothing ever answered: a frozen or overloaded server) makes
submissions a quick 503 with the job failed visibly, never a request held for the whole hang with its job
left queued and unsent; the API's other requests pay the hang once, not on every call."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from tests.utils.servers import live_api_for, postgres_settings

pytestmark = pytest.mark.services


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()
    for connection in held:
        connection.close()


def test_a_submission_to_a_hung_redis_is_a_quick_503_and_a_failed_job(
    postgres_url: str, clean_pg: Engine, hung_redis: str
) -> None:
    with live_api_for(postgres_settings(postgres_url, hung_redis)) as api:
        started = time.monotonic()
        response = api.client.post("/v1/jobs", json={"prompt": "p"})
        took = time.monotonic() - started
        assert response.status_code == 503 and "queue is unavailable" in response.json()["detail"]
        assert took < 6.0, took
        [job] = api.client.get("/v1/jobs").json()["items"]
        assert job["status"] == "failed" and "could not queue" in job["error"]  # not left queued, unsent
        # Health says so quickly; the rate limiter asked Redis once and lets requests through meanwhile.
        started = time.monotonic()
        health = api.client.get("/healthz")
        assert health.status_code == 503 and health.json()["broker"] == "unreachable"
        assert time.monotonic() - started < 2.0
        for _ in range(5):
            started = time.monotonic()
            assert api.client.get("/v1/models").status_code == 200
            assert time.monotonic() - started < 0.3
