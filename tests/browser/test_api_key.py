"""The pages against a service that requires API keys (TOKENTREE_REQUIRE_API_KEY=true): the top bar's key
field, the key kept in the tab's session storage and sent on every request to the service (the event
stream included, read with fetch so that it carries the header) and never to another origin, and
messages that say what to do when the key is missing or refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from .conftest import MODELS, SEED_TREE
from .helpers import READY, goto, wait_until
from .service import BrowserService, file_server, tree_nodes

pytestmark = pytest.mark.browser

KEY_NEEDED = "This service needs an API key. Enter your API key"
KEY_REFUSED = "The service refused your API key"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrowserService, str]]:
    """The real API requiring keys, a key's token, and a finished tree job "india" of that key."""
    from bench.factories import RecordingDispatcher
    from tests.utils.servers import embedded_settings, live_api_for
    from tokentree.migrations import upgrade_database
    from tokentree.models import api_keys

    settings = embedded_settings(tmp_path_factory.mktemp("keyed"), models=MODELS, rate_limit_per_minute=0,
                                 require_api_key=True)
    upgrade_database(settings.sqlalchemy_url)
    files_dir = tmp_path_factory.mktemp("keyed-files")
    with file_server(files_dir) as files_url, live_api_for(settings, RecordingDispatcher()) as api:
        with api.session_factory() as session:
            token = api_keys.create_key(session, "browser tests").token
        api.client.headers["Authorization"] = f"Bearer {token}"
        service = BrowserService(url=api.url, client=api.client, session_factory=api.session_factory,
                                 dispatcher=api.dispatcher, files_dir=files_dir, files_url=files_url)
        service.add_tree_job("india", json.loads(SEED_TREE.read_text(encoding="utf-8")))
        yield service, token


def with_key(page, key: str) -> None:
    """The tab holds `key`, as if entered in the field, from its first page on."""
    page.context.add_init_script(f"sessionStorage.setItem('tokentree.apiKey', {json.dumps(key)})")


def enter_key(page, key: str) -> None:
    """Type a key in the top bar's field and use it (the page reloads)."""
    if not page.locator("#key-form").is_visible():
        page.click("#key-toggle")
    page.fill("#api-key", key)
    with page.expect_navigation():
        page.click("#key-form button[type=submit]")


def test_a_missing_then_refused_then_valid_key(browser_page, keyed):
    service, token = keyed
    page = browser_page
    url = f"{service.url}/viewer/tree?job={service.job('india')}"
    goto(page, url, state="body[data-state=error]")
    text = page.locator("#canvas-message").text_content()
    assert "API key needed" in text and KEY_NEEDED in text
    assert "401" not in text
    # The field opens by itself, marked, to take the key.
    assert page.locator("#key-form").is_visible()
    assert "needed" in page.locator("#key-box").get_attribute("class")

    enter_key(page, "tt_not-a-key-of-this-service")
    page.wait_for_selector("body[data-state=error]", state="attached")
    text = page.locator("#canvas-message").text_content()
    assert "API key refused" in text and KEY_REFUSED in text and "Enter a valid API key" in text

    enter_key(page, token)
    page.wait_for_selector(READY, state="attached")
    assert page.locator("#tree-svg g.unit").count() > 10
    assert page.locator("#key-box").get_attribute("data-key") == "set"
    assert page.locator("#key-toggle").text_content() == "API key ✓"
    # Kept in this tab's session storage only: not in the URL, not in a cookie.
    assert page.evaluate("() => sessionStorage.getItem('tokentree.apiKey')") == token
    assert token not in page.url
    assert page.context.cookies() == []
    # Every page of the tab uses it: the job list, the response viewer.
    goto(page, f"{service.url}/")
    wait_until(lambda: page.locator(f"#jobs-body tr[data-job='{service.job('india')}']").count() == 1,
               message="the job in the list")
    goto(page, f"{service.url}/viewer/response?job={service.job('india')}")
    assert page.locator("#tokens .tok").count() > 1
    # Forget drops it: the service asks for a key again.
    with page.expect_navigation():
        page.click("#key-toggle")
        page.click("#key-forget")
    page.wait_for_selector("body[data-state=error]", state="attached")
    assert KEY_NEEDED in page.locator("#message").text_content()
    assert page.evaluate("() => sessionStorage.getItem('tokentree.apiKey')") is None
    assert page.log.page_errors == []


def test_the_job_list_says_to_enter_a_key(browser_page, keyed):
    service, _ = keyed
    page = browser_page
    page.goto(f"{service.url}/")
    message = page.locator("#jobs-message")
    wait_until(lambda: KEY_NEEDED in message.text_content(), message="the key message")
    assert "401" not in message.text_content()
    assert page.log.page_errors == []


def test_the_event_stream_carries_the_key(browser_page, keyed, seed_tree_doc):
    service, token = keyed
    page = browser_page
    sent: dict[str, str | None] = {}
    page.on("request", lambda r: sent.__setitem__(r.url, r.headers.get("authorization")))
    metadata = seed_tree_doc["metadata"]
    job_id = service.submit(metadata["prompt"], **metadata["parameters"])
    service.start(job_id)
    nodes = tree_nodes(seed_tree_doc)
    db_ids: dict[int, int] = {}
    service.grow(job_id, [n for n in nodes if n.depth <= 1], db_ids)
    with_key(page, token)
    goto(page, f"{service.url}/viewer/tree?job={job_id}")
    assert "running" in page.locator("#job-status").text_content()

    def work() -> None:
        time.sleep(1.2)
        service.grow(job_id, [n for n in nodes if n.depth > 1], db_ids)
        time.sleep(1.2)
        service.finish(job_id)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        wait_until(lambda: "succeeded" in page.locator("#job-status").text_content(), timeout=15,
                   message="the end event")
    finally:
        worker.join(timeout=15)
    events = f"{service.url}/v1/jobs/{job_id}/events"
    assert sent.get(events) == f"Bearer {token}"  # the stream, not a fallback to polling, with the key
    assert not any(f"/v1/jobs/{job_id}" in url and "?" in url for url in sent)  # never in a URL
    assert page.log.problems() == []


def test_the_key_never_goes_to_another_origin(browser_page, keyed, seed_tree_doc):
    service, token = keyed
    page = browser_page
    url = service.add_file("tree.json", json.dumps(seed_tree_doc))
    sent: dict[str, str | None] = {}
    page.on("request", lambda r: sent.__setitem__(r.url, r.headers.get("authorization")))
    with_key(page, token)
    goto(page, f"{service.url}/viewer/tree?file={url}")
    assert url in sent and sent[url] is None
    assert page.log.problems() == []


def test_a_key_no_header_can_carry_is_refused_in_the_field(browser_page, keyed):
    service, _ = keyed
    page = browser_page
    page.goto(f"{service.url}/")
    page.wait_for_selector("#key-form:not(.hidden)")  # opened by the service's 401
    page.fill("#api-key", "tt_clé secrète")
    page.click("#key-form button[type=submit]")
    message = page.evaluate("() => document.getElementById('api-key').validationMessage")
    assert message.startswith("An API key has no spaces")
    assert page.evaluate("() => sessionStorage.getItem('tokentree.apiKey')") is None
    assert page.log.page_errors == []
