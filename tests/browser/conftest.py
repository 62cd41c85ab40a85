"""Fixtures for the browser tests: a stand-in service, a headless Chromium, screenshots.

The app is assembled from `api.viewers` (pages + static files) plus small test-only routes that
mimic the API's contract (`/v1/jobs...`) from seed files and synthetic trees, served by uvicorn in
a background thread on a free loopback port. Tests against the real service can reuse
`browser`, `browser_page` and `screenshot` and override `base_url`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("TOKENTREE_SEED_DIR", Path(__file__).resolve().parent / "data"))
ARTIFACTS = ROOT / "artifacts" / "screenshots"
DOCS_IMG = ROOT / "docs" / "img"
CHROMIUM = os.environ.get("TOKENTREE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SEED_TREE = DATA_DIR / "india_capital_tree.json"
SEED_LOGPROBS = DATA_DIR / "logprobs_sample.jsonl"


# --------------------------------------------------------------------------- stand-in service


@dataclass
class FakeJob:
    job: dict[str, Any]
    tree_text: str | None = None
    logprobs_text: str | None = None
    # Live jobs: the tree at each stage; the event stream advances through them.
    stages: list[str] = field(default_factory=list)
    stage: int = 0
    stage_delay: float = 0.4


def make_job(
    job_id: str,
    *,
    kind: str = "tree",
    prompt: str = "",
    status: str = "succeeded",
    model: str = "demo",
    parameters: dict | None = None,
    nodes: int = 0,
    completed: int = 0,
    error: str | None = None,
) -> dict[str, Any]:
    now = "2025-01-01T12:00:00Z"
    return {
        "id": job_id,
        "kind": kind,
        "prompt": prompt,
        "model": model,
        "parameters": parameters or {},
        "chat": False,
        "prefix": None,
        "status": status,
        "error": error,
        "created_at": now,
        "started_at": now if status != "queued" else None,
        "finished_at": now if status in {"succeeded", "failed", "cancelled"} else None,
        "progress": {"nodes": nodes, "frontier": 0, "completed_paths": completed, "workers": {}},
    }


class FakeService:
    """In-memory jobs and files behind the contract's routes. Tests register what they need."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.files: dict[str, tuple[str, str]] = {}
        self.submitted: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add_job(self, fake: FakeJob) -> str:
        with self.lock:
            self.jobs[fake.job["id"]] = fake
        return fake.job["id"]

    def add_file(self, name: str, text: str, media_type: str = "application/json") -> str:
        with self.lock:
            self.files[name] = (text, media_type)
        return f"/test-files/{name}"


def build_app(service: FakeService) -> FastAPI:
    from api import viewers

    app = FastAPI()
    app.include_router(viewers.router)
    viewers.mount_static(app)

    def get(job_id: str) -> FakeJob:
        fake = service.jobs.get(job_id)
        if fake is None:
            raise HTTPException(404, detail=f"job {job_id} not found")
        return fake

    @app.get("/v1/models")
    def models():
        return {"models": [{"name": "demo"}, {"name": "tiny-gemma"}]}

    @app.get("/v1/jobs")
    def list_jobs(limit: int = 20, offset: int = 0, status: str | None = None):
        items = [f.job for f in service.jobs.values() if status is None or f.job["status"] == status]
        items = list(reversed(items))
        return {"items": items[offset : offset + limit], "total": len(items)}

    @app.post("/v1/jobs", status_code=201)
    async def submit(request: Request):
        body = await request.json()
        errors = []
        if not str(body.get("prompt", "")).strip():
            errors.append(
                {"loc": ["body", "prompt"], "msg": "prompt must not be empty", "type": "value_error"}
            )
        params = body.get("parameters") or {}
        for name, value in params.items():
            if isinstance(value, int | float) and value < 0:
                errors.append(
                    {"loc": ["body", "parameters", name], "msg": "must be >= 0", "type": "value_error"}
                )
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        job_id = f"sub-{len(service.submitted) + 1}"
        service.submitted.append(body)
        tree_text = service.files.get("__next_tree__", (None, ""))[0]
        job = make_job(
            job_id,
            kind=body.get("kind", "tree"),
            prompt=body["prompt"],
            status="succeeded",
            parameters=params,
        )
        job["chat"] = bool(body.get("chat"))
        job["prefix"] = body.get("prefix")
        service.add_job(FakeJob(job=job, tree_text=tree_text))
        return job

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str):
        return get(job_id).job

    @app.get("/v1/jobs/{job_id}/tree")
    def tree(job_id: str):
        fake = get(job_id)
        text = fake.stages[fake.stage] if fake.stages else fake.tree_text
        if text is None:
            raise HTTPException(404, detail="this job has no tree yet")
        return Response(text, media_type="application/json")

    @app.get("/v1/jobs/{job_id}/logprobs.jsonl")
    def logprobs(job_id: str):
        fake = get(job_id)
        if fake.logprobs_text is None:
            raise HTTPException(404, detail="this job has no log-probabilities")
        return Response(fake.logprobs_text, media_type="application/x-ndjson")

    @app.get("/v1/jobs/{job_id}/events")
    async def events(job_id: str):
        fake = get(job_id)

        async def stream():
            while fake.stages and fake.stage < len(fake.stages) - 1:
                yield f"event: progress\ndata: {json.dumps(fake.job)}\n\n"
                await asyncio.sleep(fake.stage_delay)
                fake.stage += 1
                fake.job["progress"]["nodes"] += 1
            fake.job["status"] = "succeeded"
            yield f"event: end\ndata: {json.dumps(fake.job)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/test-files/{name}")
    def test_file(name: str):
        if name not in service.files:
            raise HTTPException(404, detail="no such test file")
        text, media_type = service.files[name]
        return Response(text, media_type=media_type)

    return app


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="session")
def fake_service() -> FakeService:
    service = FakeService()
    seed_tree = SEED_TREE.read_text(encoding="utf-8")
    seed_doc = json.loads(seed_tree)
    service.add_job(
        FakeJob(
            job=make_job(
                "india",
                prompt=seed_doc["metadata"]["prompt"],
                parameters=seed_doc["metadata"]["parameters"],
                nodes=174,
                completed=6,
            ),
            tree_text=seed_tree,
        )
    )
    service.add_job(
        FakeJob(
            job=make_job("lp", kind="logprobs", prompt="Who was the first President of India?", nodes=0),
            logprobs_text=SEED_LOGPROBS.read_text(encoding="utf-8"),
        )
    )
    service.add_file("india_capital_tree.json", seed_tree)
    service.add_file(
        "logprobs_sample.jsonl", SEED_LOGPROBS.read_text(encoding="utf-8"), "application/x-ndjson"
    )
    return service


@pytest.fixture(scope="session")
def live_server(fake_service: FakeService):
    import uvicorn

    app = build_app(fake_service)
    sock = _free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture(scope="session")
def base_url(live_server: str) -> str:
    """Where the pages are served. Override to point the same tests at the real service."""
    return live_server


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="session", autouse=True)
def _fresh_failure_screenshots():
    """Failure screenshots from an earlier run would mislead: remove them."""
    if ARTIFACTS.exists():
        for old in ARTIFACTS.glob("FAILED-*.png"):
            old.unlink()


@pytest.fixture(scope="session")
def browser():
    # The suite never passes by skipping: `make test` installs Chromium (scripts/ensure_test_services.sh)
    # and Playwright (a dev dependency), and a run without them fails saying how to get them.
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make services` (or `apt-get install -y chromium`), or "
                    "set TOKENTREE_CHROMIUM to a Chromium binary")
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@dataclass
class PageLog:
    """Console errors, uncaught exceptions, dialogs (an `alert` means injected script ran) and
    requests that left the loopback host."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return (
            [f"console: {m}" for m in self.console_errors]
            + [f"pageerror: {m}" for m in self.page_errors]
            + [f"dialog: {m}" for m in self.dialogs]
            + [f"external: {u}" for u in self.external_requests]
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture()
def browser_page(browser, request):
    """A fresh page (1440×900) whose console errors etc. are collected in `page.log` (a PageLog)."""
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, accept_downloads=True, device_scale_factor=1
    )
    page = context.new_page()
    log = PageLog()
    page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.page_errors.append(str(e)))

    def on_dialog(d):
        log.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    page.on("dialog", on_dialog)

    def on_request(r):
        url = r.url
        if not (
            url.startswith("http://127.0.0.1")
            or url.startswith("http://localhost")
            or url.startswith("data:")
            or url.startswith("blob:")
            or url.startswith("about:")
        ):
            log.external_requests.append(url)

    page.on("request", on_request)
    page.log = log
    page.set_default_timeout(10_000)
    yield page
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        try:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"))
        except Exception:
            pass
    context.close()


@pytest.fixture()
def screenshot(request):
    """screenshot(page, name, docs=None): save artifacts/screenshots/<name>.png (and docs/img/<docs>).

    The README's pictures come from the real service (test_real_service.py, whose module sets
    `DOCS_IMAGES = True`), and are only rewritten when asked (`make docs-images`), so a test run leaves
    the checkout as it was; every other screenshot stays under artifacts/.
    """
    writes_docs = bool(getattr(request.module, "DOCS_IMAGES", False)) and bool(
        os.environ.get("TOKENTREE_DOCS_IMAGES"))

    def take(page, name: str, docs: str | None = None, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if docs and writes_docs:
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            (DOCS_IMG / docs).write_bytes(path.read_bytes())
        return path

    return take


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def seed_tree_doc() -> dict:
    return json.loads(SEED_TREE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def big_tree_text() -> str:
    from .synthetic import dumps_deep, synthetic_tree

    return dumps_deep(synthetic_tree(10_000))
