"""How every viewer loads a job (js/loader.js), against the real API's answers: a job that does not exist
or was deleted (404), a link that holds no job id, the service not answering, a job of the other kind,
a job that has nothing to show yet (waiting, without asking for the tree the API would refuse with 409)
and then ends, and a job that failed."""

from __future__ import annotations

import uuid

import pytest

from .conftest import seed_records
from .helpers import READY, SETTLED, goto
from .service import tree_nodes

pytestmark = pytest.mark.browser

VIEWERS = ("tree", "response", "logprobs")
MESSAGES = {"tree": "#canvas-message", "response": "#message", "logprobs": "#message"}


def message(page, view: str) -> str:
    return page.locator(MESSAGES[view]).text_content()


@pytest.mark.parametrize("view", VIEWERS)
def test_a_job_that_is_not_there(browser_page, base_url, view):
    page = browser_page
    missing = str(uuid.uuid4())
    goto(page, f"{base_url}/viewer/{view}?job={missing}", state="body[data-state=error]")
    # What happened and what to do, not the status code.
    assert f"Job {missing} not found" in message(page, view)
    assert "deleted" in message(page, view) and "Check the link" in message(page, view)
    assert "404" not in message(page, view)
    assert page.locator(f"{MESSAGES[view]} a[href='/']").count() == 1  # to the job list
    assert page.locator("#empty-state").is_visible()
    # Not a job id (a typo, a cut-off copy): said before asking the API, not in a validator's words.
    for bad in ("india", missing[:-3], missing + "x"):
        goto(page, f"{base_url}/viewer/{view}?job={bad}", state="body[data-state=error]")
        assert "Not a job id: check the link" in message(page, view)
        assert "UUID" not in message(page, view) and "422" not in message(page, view)
    assert page.log.page_errors == []  # (the console notes the 404 of the first)


@pytest.mark.parametrize("view", VIEWERS)
def test_a_job_deleted_while_shown_says_so(browser_page, base_url, service, seed_tree_doc, view):
    page = browser_page
    kind = "logprobs" if view == "logprobs" else "tree"
    job_id = service.submit(seed_tree_doc["metadata"]["prompt"], kind=kind)
    goto(page, f"{base_url}/viewer/{view}?job={job_id}", state="body[data-state=waiting]")
    assert service.client.delete(f"/v1/jobs/{job_id}").status_code in (200, 204)
    page.reload()
    page.wait_for_selector("body[data-state=error]", state="attached")
    assert f"Job {job_id} not found" in message(page, view) and "deleted" in message(page, view)
    assert page.log.page_errors == []


@pytest.mark.parametrize("view", VIEWERS)
def test_the_service_down_says_what_to_do(browser_page, base_url, view):
    page = browser_page
    # The page is open (as a tab left open would be) but the service's API no longer answers.
    page.context.route("**/v1/**", lambda route: route.abort("connectionrefused"))
    page.goto(f"{base_url}/viewer/{view}?job={uuid.uuid4()}")
    page.wait_for_selector("body[data-state=error]", state="attached")
    text = message(page, view)
    assert "Service not reachable" in text and "check that it is running" in text
    assert page.log.page_errors == []


@pytest.mark.parametrize(("view", "job"), [("tree", "lp"), ("response", "lp"), ("logprobs", "india")])
def test_a_job_of_the_other_kind_links_to_its_viewer(browser_page, base_url, service, view, job):
    page = browser_page
    job_id = service.job(job)
    goto(page, f"{base_url}/viewer/{view}?job={job_id}")
    other = "logprobs" if job == "lp" else "tree"
    assert page.locator(f"{MESSAGES[view]} a[href='/viewer/{other}?job={job_id}']").count() == 1
    assert "succeeded" in page.locator("#job-status").text_content()
    assert page.log.problems() == []


@pytest.mark.parametrize("view", VIEWERS)
def test_a_queued_job_is_awaited_then_shown(browser_page, base_url, service, seed_tree_doc, view):
    page = browser_page
    kind = "logprobs" if view == "logprobs" else "tree"
    record = seed_records()[1]
    job_id = service.submit(record["prompt"] if kind == "logprobs" else seed_tree_doc["metadata"]["prompt"],
                            kind=kind)
    goto(page, f"{base_url}/viewer/{view}?job={job_id}", state="body[data-state=waiting]")
    assert "Job is queued" in message(page, view)
    assert "queued" in page.locator("#job-status").text_content()
    # The worker takes the job and finishes it; the page follows its event stream.
    if kind == "tree":
        service.run_tree_job(job_id, seed_tree_doc)
    else:
        service.start(job_id)
        service.finish(job_id, record=record)
    page.wait_for_selector(READY, state="attached")
    assert "succeeded" in page.locator("#job-status").text_content()
    shown = {"tree": "#tree-svg g.unit.root", "response": "#tokens .tok", "logprobs": "#cards article"}[view]
    assert page.locator(shown).count() >= 1
    assert message(page, view) == ""
    # No request failed on the way: the tree was not asked for before it had nodes (the API's 409).
    assert page.log.problems() == []


@pytest.mark.parametrize("view", VIEWERS)
def test_a_failed_job_says_why(browser_page, base_url, service, view):
    page = browser_page
    job_id = service.submit("The capital of India is", kind="logprobs" if view == "logprobs" else "tree")
    service.start(job_id)
    service.finish(job_id, "failed", error="the model ran out of memory")
    goto(page, f"{base_url}/viewer/{view}?job={job_id}", state=SETTLED)
    assert f"Job {job_id} failed" in message(page, view)
    assert "the model ran out of memory" in message(page, view)
    assert "the model ran out of memory" in page.locator("#job-status").text_content()
    assert page.locator("body").get_attribute("data-state") == "error"
    assert page.log.problems() == []


@pytest.mark.parametrize("view", ["tree", "response"])
def test_a_failed_job_shows_its_partial_tree(browser_page, base_url, service, seed_tree_doc, view):
    page = browser_page
    job_id = service.submit(seed_tree_doc["metadata"]["prompt"])
    service.start(job_id)
    service.grow(job_id, [n for n in tree_nodes(seed_tree_doc) if n.depth <= 2], {})
    service.finish(job_id, "failed", error="the worker was lost")
    goto(page, f"{base_url}/viewer/{view}?job={job_id}", state="body[data-state=error]")
    assert "the worker was lost" in message(page, view)
    shown = {"tree": "#tree-svg g.unit[data-depth='2']", "response": "#tokens .tok"}[view]
    assert page.locator(shown).count() >= 1
    assert not page.locator("#empty-state").is_visible()
    assert page.log.problems() == []
