"""Access: API keys (stored as hashes, managed with `tokentree keys`), required when configured, each
key confined to its own jobs (another key's job is a 404); no request field reaches the model loader's
trust_remote_code; CORS closed unless origins are listed; production refuses to run without keys."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select

from bench.factories import RecordingDispatcher
from tests.reliability.conftest import bearer, new_token, service_settings
from tests.utils.cli import run_cli
from tests.utils.servers import embedded_settings, live_api_for
from tokentree.api.schemas import JobCreate
from tokentree.engine.params import LogprobsParams, TreeParams
from tokentree.migrations import upgrade_database
from tokentree.models import api_keys, jobs
from tokentree.models.db import make_session_factory
from tokentree.models.schema import ApiKey
from tokentree.models.settings import Settings

pytestmark = pytest.mark.services
REQUEST = {"prompt": "The capital of India is", "parameters": {"max_nodes": 50}}


def test_only_the_hash_is_stored(clean_pg: Engine) -> None:
    key_id, token = new_token(clean_pg, "ci")
    assert token.startswith("tt_") and len(token) >= 40
    with make_session_factory(clean_pg)() as session:
        row = session.scalars(select(ApiKey)).one()
    assert str(row.id) == key_id and row.name == "ci" and row.revoked_at is None
    assert row.hash == hashlib.sha256(token.encode()).hexdigest() and token[3:] not in row.hash
    assert token.startswith(row.prefix) and len(row.prefix) < len(token) // 3


def test_keys_are_required_when_configured(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    _, token = new_token(clean_pg, "alice")
    settings = service_settings(postgres_url, redis_url, require_api_key=True)
    with live_api_for(settings) as api:
        for headers in (
            {},
            bearer("tt_" + "x" * 43),
            bearer("not-a-key"),
            {"Authorization": "Basic YTpi"},
            {"Authorization": "Bearer"},
        ):
            for method, path in (
                ("GET", "/v1/jobs"),
                ("POST", "/v1/jobs"),
                ("GET", "/v1/models"),
                ("GET", f"/v1/jobs/{uuid.uuid4()}"),
            ):
                response = api.client.request(method, path, json=REQUEST, headers=headers)
                assert response.status_code == 401, (headers, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "API key" in response.json()["detail"]
        assert api.client.get("/healthz").status_code == 200  # probes need no key
        created = api.client.post("/v1/jobs", json=REQUEST, headers=bearer(token))
        assert created.status_code == 201, created.text
        assert api.client.get("/v1/models", headers=bearer(token)).status_code == 200


def test_a_revoked_key_stops_working_at_once(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    env = {"TOKENTREE_DATABASE_URL": postgres_url}
    created = run_cli("keys", "create", "laptop", **env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("tt_") and "shown only this once" in created.stderr
    listing = run_cli("keys", "list", **env)
    key_id, name, prefix, _, state = listing.stdout.splitlines()[1].split("\t")
    assert (name, state) == ("laptop", "active") and token.startswith(prefix.rstrip("."))
    assert token not in listing.stdout
    settings = service_settings(postgres_url, redis_url, require_api_key=True)
    with live_api_for(settings) as api:
        assert api.client.get("/v1/jobs", headers=bearer(token)).status_code == 200
        revoked = run_cli("keys", "revoke", key_id, **env)
        assert revoked.returncode == 0 and f"revoked key {key_id} (laptop)" in revoked.stdout
        assert api.client.get("/v1/jobs", headers=bearer(token)).status_code == 401
    assert "\trevoked " in run_cli("keys", "list", **env).stdout
    again = run_cli("keys", "revoke", key_id, **env)
    assert again.returncode == 0 and "already revoked" in again.stdout
    unknown = run_cli("keys", "revoke", str(uuid.uuid4()), **env)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "no API key" in unknown.stderr


def test_a_revoked_keys_event_stream_ends_at_once(clean_pg: Engine, postgres_url: str, redis_url: str
                                                   ) -> None:
    key_id, token = new_token(clean_pg, "watcher")
    settings = service_settings(postgres_url, redis_url, require_api_key=True, events_interval_s=0.1)
    with live_api_for(settings) as api:
        job = api.client.post("/v1/jobs", json=REQUEST, headers=bearer(token)).json()
        names: list[str] = []
        with api.client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=bearer(token)) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    names.append(line.removeprefix("event: "))
                    if len(names) == 1:
                        with make_session_factory(clean_pg)() as session:
                            assert api_keys.revoke_key(session, uuid.UUID(key_id))
                elif line.startswith("data: ") and names[-1] == "error":
                    assert "revoked" in line
        assert names == ["progress", "error"]


def test_a_key_sees_only_its_own_jobs(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    alice_id, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    settings = service_settings(postgres_url, redis_url, require_api_key=True, events_max_s=2)
    with live_api_for(settings) as api:
        mine = api.client.post("/v1/jobs", json=REQUEST, headers=bearer(alice)).json()
        theirs = api.client.post("/v1/jobs", json=REQUEST, headers=bearer(bob)).json()
        with api.session() as session:
            assert jobs.get_job(session, mine["id"]).owner == alice_id  # type: ignore[union-attr]
        listed = api.client.get("/v1/jobs", headers=bearer(alice)).json()
        assert [job["id"] for job in listed["items"]] == [mine["id"]] and listed["total"] == 1
        job_id = theirs["id"]
        for method, path in (
            ("GET", ""),
            ("POST", "/cancel"),
            ("DELETE", ""),
            ("GET", "/tree"),
            ("GET", "/paths"),
            ("GET", "/logprobs.jsonl"),
            ("GET", "/events"),
        ):
            response = api.client.request(method, f"/v1/jobs/{job_id}{path}", headers=bearer(alice))
            # Exactly what an id that never existed gets: nothing tells alice that bob's job is there.
            assert response.status_code == 404, (path, response.text)
            assert response.json() == {"detail": f"job {job_id} not found"}
        assert api.client.get(f"/v1/jobs/{job_id}", headers=bearer(bob)).json()["status"] == "queued"
        cancelled = api.client.post(f"/v1/jobs/{mine['id']}/cancel", headers=bearer(alice))
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert api.client.delete(f"/v1/jobs/{mine['id']}", headers=bearer(alice)).status_code == 204
        assert api.client.get("/v1/jobs", headers=bearer(bob)).json()["total"] == 1


def test_no_request_field_reaches_trust_remote_code(
    clean_pg: Engine, postgres_url: str, redis_url: str
) -> None:
    # The request's own fields, and the parameters it may set, are closed sets without it...
    assert "trust_remote_code" not in JobCreate.model_fields
    names = {f.name for params in (TreeParams, LogprobsParams) for f in dataclasses.fields(params)}
    assert not any("remote" in name or "trust" in name for name in names)
    # ...and the API refuses anything else, wherever it is put.
    with live_api_for(service_settings(postgres_url, redis_url)) as api:
        for body in (
            {**REQUEST, "trust_remote_code": True},
            {**REQUEST, "parameters": {"trust_remote_code": True}},
            {**REQUEST, "kind": "logprobs", "parameters": {"trust_remote_code": True}},
            {**REQUEST, "model": "demo?trust_remote_code=true"},
        ):
            response = api.client.post("/v1/jobs", json=body)
            assert response.status_code == 422, body
        assert api.client.get("/v1/jobs").json()["total"] == 0


def test_cors_is_closed_unless_origins_are_listed(tmp_path: Path) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    upgrade_database(embedded_settings(tmp_path).sqlalchemy_url)
    with live_api_for(embedded_settings(tmp_path), RecordingDispatcher()) as api:
        response = api.client.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert response.status_code == 200
        assert not [h for h in response.headers if h.startswith("access-control-")]
        response = api.client.options("/v1/jobs", headers=preflight)
        assert response.status_code == 405 and "access-control-allow-origin" not in response.headers
    settings = embedded_settings(tmp_path, cors_origins="https://viewer.example, http://localhost:3000")
    assert settings.cors_origins == ["https://viewer.example", "http://localhost:3000"]
    with live_api_for(settings, RecordingDispatcher()) as api:
        allowed = api.client.options("/v1/jobs", headers={**preflight, "Origin": "https://viewer.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://viewer.example"
        refused = api.client.options("/v1/jobs", headers=preflight)
        assert "access-control-allow-origin" not in refused.headers
        response = api.client.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"environment": "production"}, "TOKENTREE_REQUIRE_API_KEY=true"),
        ({"cors_origins": "viewer.example"}, "http:// or https://"),
    ],
)
def test_unsafe_access_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]
    assert Settings(environment="production", require_api_key=True).require_api_key


def test_serve_refuses_production_without_keys(tmp_path: Path) -> None:
    done = run_cli("serve", TOKENTREE_ENVIRONMENT="production", XDG_DATA_HOME=str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "TOKENTREE_REQUIRE_API_KEY=true" in done.stderr


def test_an_idempotency_key_is_per_api_key(clean_pg: Engine, postgres_url: str, redis_url: str) -> None:
    """Two callers who pick the same Idempotency-Key get a job each; neither sees the other's."""
    _, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    key = {"Idempotency-Key": "submission-1"}
    with live_api_for(service_settings(postgres_url, redis_url, require_api_key=True)) as api:
        mine = api.client.post("/v1/jobs", json=REQUEST, headers={**bearer(alice), **key})
        theirs = api.client.post("/v1/jobs", json=REQUEST, headers={**bearer(bob), **key})
        assert (mine.status_code, theirs.status_code) == (201, 201)
        assert mine.json()["id"] != theirs.json()["id"]
        again = api.client.post("/v1/jobs", json=REQUEST, headers={**bearer(bob), **key})
        assert again.status_code == 200 and again.json()["id"] == theirs.json()["id"]


def test_one_key_cannot_open_event_streams_without_end(clean_pg: Engine, postgres_url: str, redis_url: str
                                                       ) -> None:
    """Each stream polls the database from the request threads: past its cap a key's next stream is a
    429; other keys still get theirs, and a closed stream frees its slot."""
    _, alice = new_token(clean_pg, "alice")
    _, bob = new_token(clean_pg, "bob")
    settings = service_settings(postgres_url, redis_url, require_api_key=True, events_interval_s=0.1,
                                events_max_per_caller=2, events_max_total=3)
    lines: list[Iterator[str]] = []  # each open stream's reader, kept: a dropped one closes its stream
    with live_api_for(settings) as api, contextlib.ExitStack() as open_streams:
        mine = api.client.post("/v1/jobs", json=REQUEST, headers=bearer(alice)).json()["id"]
        theirs = api.client.post("/v1/jobs", json=REQUEST, headers=bearer(bob)).json()["id"]

        def open_stream(job_id: str, token: str) -> httpx.Response:
            response = open_streams.enter_context(
                api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(token)))
            if response.status_code == 200:
                lines.append(response.iter_lines())
                assert next(lines[-1]) == "event: progress"
            return response

        first = open_stream(mine, alice)
        assert open_stream(mine, alice).status_code == 200
        refused = open_stream(mine, alice)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        refused.read()
        assert "2 event streams open for this API key" in refused.json()["detail"]
        assert open_stream(theirs, bob).status_code == 200  # another key is not held up by alice's
        assert open_stream(theirs, bob).status_code == 429  # but the server's 3 are taken
        first.close()
        deadline = time.monotonic() + 5
        while (response := open_stream(mine, alice)).status_code != 200:  # freed once the server sees it
            assert time.monotonic() < deadline, response.status_code
            time.sleep(0.2)
