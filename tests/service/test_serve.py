"""`tokentree serve` as a newcomer runs it: one command, one process. Embedded, it migrates its own
SQLite file and runs jobs with the in-process worker; given Postgres and Redis, it is the API alone."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.utils.cli import REPO_ROOT, cli_command, cli_env, tokentree_serve
from tests.utils.servers import free_port
from tokentree.api.dispatch import model_queue

pytestmark = pytest.mark.timeout(300)


def wait_for_end(client: httpx.Client, job_id: str, seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not end in {seconds} s")


def test_embedded_serve_runs_jobs_in_one_process(tmp_path: Path) -> None:
    with tokentree_serve(tmp_path) as client:
        assert client.get("/healthz").json()["broker"] == "embedded"
        tree_job = client.post("/v1/jobs", json={"prompt": "The capital of India is",
                                                 "parameters": {"max_nodes": 60}}).json()
        question = "Once upon a time"
        logprobs_job = client.post("/v1/jobs", json={"prompt": question, "kind": "logprobs",
                                                     "parameters": {"max_new_tokens": 8}}).json()
        done = wait_for_end(client, tree_job["id"])
        assert done["status"] == "succeeded", done["error"]
        assert 1 < done["progress"]["nodes"] <= 60
        tree = client.get(f"/v1/jobs/{tree_job['id']}/tree").json()
        assert tree["tree"]["text"] == "The capital of India is" and tree["tree"]["children"]
        assert wait_for_end(client, logprobs_job["id"])["status"] == "succeeded"
        record = json.loads(client.get(f"/v1/jobs/{logprobs_job['id']}/logprobs.jsonl").text)
        assert record["prompt"] == question and record["data"] and record["response"].strip()
        assert client.get("/").status_code == 200  # the viewers come with it
    assert (tmp_path / "tokentree" / "tokentree.sqlite3").exists()
    log = (tmp_path / "serve.log").read_text()
    assert "Running upgrade" in log and "setup plugin" not in log  # the migrations, not alembic's chatter


@pytest.mark.services
def test_serve_with_postgres_and_redis_is_the_api_alone(tmp_path: Path, postgres_url: str,
                                                        redis_url: str) -> None:
    services = {"TOKENTREE_DATABASE_URL": postgres_url, "TOKENTREE_REDIS_URL": redis_url}
    with tokentree_serve(tmp_path, **services) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["database"] == health.json()["broker"] == "ok"
        job = client.post("/v1/jobs", json={"prompt": "hello"}).json()
        assert job["status"] == "queued"
        # No worker runs: the API works, and says that demo's jobs wait for one.
        assert client.get("/healthz").json() == {"status": "degraded", "database": "ok", "broker": "ok",
                                                  "unserved_models": ["demo"]}
    queued = redis.Redis.from_url(redis_url).lrange(model_queue("demo"), 0, -1)
    assert [json.loads(m)["headers"]["argsrepr"] for m in queued] == [f"['{job['id']}']"]
    assert not (tmp_path / "tokentree").exists()  # no SQLite file on the side


def test_serve_refuses_an_unmigrated_shared_database(tmp_path: Path) -> None:
    empty = f"sqlite+pysqlite:///{tmp_path / 'shared.sqlite3'}"
    done = subprocess.run(cli_command("serve", "--port", str(free_port())), cwd=REPO_ROOT,
                          env=cli_env(TOKENTREE_DATABASE_URL=empty), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2
    assert "run `tokentree db upgrade`" in done.stderr


def test_forwarded_addresses_are_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    """A client that invents X-Forwarded-For addresses stays in its own rate-limit bucket; behind a
    proxy named in TOKENTREE_TRUSTED_PROXIES, each forwarded address gets its own."""
    limits = {"TOKENTREE_RATE_LIMIT_PER_MINUTE": "1", "TOKENTREE_RATE_LIMIT_BURST": "3"}

    def statuses(client: httpx.Client) -> list[int]:
        return [client.get("/v1/models", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
                for i in range(6)]

    (tmp_path / "direct").mkdir()
    (tmp_path / "proxied").mkdir()
    with tokentree_serve(tmp_path / "direct", **limits) as client:
        assert statuses(client) == [200] * 3 + [429] * 3
    with tokentree_serve(tmp_path / "proxied", TOKENTREE_TRUSTED_PROXIES="127.0.0.1", **limits) as client:
        assert statuses(client) == [200] * 6


def _response(sock: socket.socket) -> bytes:
    """One whole response to a request for /healthz (a JSON object) read from the socket."""
    data = b""
    while not data.endswith(b"}"):
        data += sock.recv(4096)
    return data


def test_half_sent_requests_are_closed_after_the_head_timeout(tmp_path: Path) -> None:
    """A client that opens connections and sends a few bytes of a request each, and never the rest, used to
    hold them open for ever. Now each is closed `TOKENTREE_HEAD_TIMEOUT_S` after it opened, or after its
    last response on a kept-alive connection; a slow but whole request is still served."""
    with tokentree_serve(tmp_path, TOKENTREE_HEAD_TIMEOUT_S="1.5") as client:
        port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
        half_sent = []
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the headers never end
            half_sent.append(sock)
        kept_alive = socket.create_connection(("127.0.0.1", port))
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(kept_alive).startswith(b"HTTP/1.1 200")
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request's head, half sent
        opened = time.monotonic()
        slow = socket.create_connection(("127.0.0.1", port))
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):  # whole, within the deadline
            slow.sendall(piece)
            time.sleep(0.3)
        assert _response(slow).startswith(b"HTTP/1.1 200")
        for sock in [*half_sent, kept_alive]:
            sock.settimeout(10)
            assert sock.recv(4096) == b"", "a half-sent request's connection was left open"
            sock.close()
        closed_after = time.monotonic() - opened
        assert closed_after < 6, closed_after
        slow.close()
        assert client.get("/healthz").status_code == 200
