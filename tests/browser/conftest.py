"""Fixtures for the browser tests: the real service, a headless Chromium, screenshots.

The pages talk to the real API (`api.app.create_app`, embedded mode: SQLite in a temporary folder) served
by uvicorn in a thread on a free loopback port, with the real routes, status codes and messages. Its jobs
are seeded through the API and the repository functions (tests/browser/service.py); nothing runs them
unless a test plays the worker. Tests against another service can reuse `browser`, `browser_page` and
`screenshot` and override `base_url`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .service import BrowserService, file_server

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
# The job list's model menu comes from /v1/models: a second model shows that it does.
MODELS = {"demo": "demo", "tiny-gemma": "tiny-gemma"}


# --------------------------------------------------------------------------- the service


def seed_records() -> list[dict]:
    lines = SEED_LOGPROBS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="session")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the file origin serves: the seed files, and what tests add."""
    folder = tmp_path_factory.mktemp("files")
    for seed in (SEED_TREE, SEED_LOGPROBS):
        (folder / seed.name).write_bytes(seed.read_bytes())
    return folder


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, files_dir: Path) -> Iterator[BrowserService]:
    """The real API on a free port, with a finished tree job "india" (the seed tree) and a finished
    log-probability job "lp" (the seed's first record)."""
    from bench.factories import RecordingDispatcher
    from tests.utils.servers import embedded_settings, live_api_for
    from tokentree.migrations import upgrade_database

    # No rate limit: pages load in bursts here (the limits have their own tests).
    settings = embedded_settings(tmp_path_factory.mktemp("tokentree"), models=MODELS, rate_limit_per_minute=0)
    upgrade_database(settings.sqlalchemy_url)
    with file_server(files_dir) as files_url, live_api_for(settings, RecordingDispatcher()) as api:
        service = BrowserService(url=api.url, client=api.client, session_factory=api.session_factory,
                                 dispatcher=api.dispatcher, files_dir=files_dir, files_url=files_url)
        service.add_tree_job("india", json.loads(SEED_TREE.read_text(encoding="utf-8")))
        service.add_logprobs_job("lp", seed_records()[0])
        yield service


@pytest.fixture(scope="session")
def base_url(service: BrowserService) -> str:
    """Where the pages are served. Override to point the same tests at another service."""
    return service.url


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


@pytest.fixture(scope="session")
def india(service: BrowserService) -> str:
    """The id of the finished job holding the seed tree ("The capital of India is")."""
    return service.job("india")


@pytest.fixture(scope="session")
def lp(service: BrowserService) -> str:
    """The id of the finished log-probability job holding the seed's first record."""
    return service.job("lp")
