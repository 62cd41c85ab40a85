"""The job list page: recent jobs with status, progress and links; the submit form."""

from __future__ import annotations

import pytest

from .helpers import goto, wait_until

pytestmark = pytest.mark.browser


def test_lists_jobs_with_links_and_submits(browser_page, base_url, fake_service, screenshot):
    page = browser_page
    goto(page, f"{base_url}/")
    rows = page.locator("#jobs-body tr[data-job]")
    wait_until(lambda: rows.count() >= 2, message="job rows")
    india = page.locator("#jobs-body tr[data-job='india']")
    assert "succeeded" in india.text_content()
    assert "The capital of India is" in india.text_content()
    assert "174 nodes" in india.text_content()
    assert india.locator("a", has_text="Tree").get_attribute("href") == "/viewer/tree?job=india"
    assert india.locator("a", has_text="Response").get_attribute("href") == "/viewer/response?job=india"
    lp = page.locator("#jobs-body tr[data-job='lp']")
    assert lp.locator("a", has_text="Log-probs").get_attribute("href") == "/viewer/logprobs?job=lp"
    # Models come from /v1/models.
    assert page.locator("#f-model option").all_text_contents() == ["demo", "tiny-gemma"]

    # Client-side check: an empty prompt.
    page.click("#submit")
    assert "Enter a prompt" in page.locator(".field[data-field='prompt']").text_content()
    # Server-side 422: the message lands on the field it names.
    page.fill("#f-prompt", "The capital of France is")
    page.fill("#p-max_depth", "-3")
    page.click("#submit")
    err = page.locator(".field[data-field='max_depth'] .err")
    err.wait_for()
    assert "must be >= 0" in err.text_content()
    assert "not accepted" in page.locator("#form-result").text_content()
    # A good submission.
    before = len(fake_service.submitted)
    page.fill("#p-max_depth", "12")
    page.fill("#p-min_branch_threshold", "0.2")
    page.click("#submit")
    page.locator("#form-result .message.info").wait_for()
    assert len(fake_service.submitted) == before + 1
    body = fake_service.submitted[-1]
    assert body == {
        "prompt": "The capital of France is",
        "model": "demo",
        "kind": "tree",
        "parameters": {"min_branch_threshold": 0.2, "max_depth": 12},
        "chat": False,
        "prefix": None,
    }
    new_id = page.locator("#form-result a").first.get_attribute("href").split("job=")[1]
    wait_until(
        lambda: page.locator(f"#jobs-body tr[data-job='{new_id}']").count() == 1, message="the new row"
    )
    # Log-probability jobs show their own parameters.
    page.select_option("#f-kind", "logprobs")
    assert page.locator("#p-top_k").is_visible()
    assert not page.locator("#p-max_depth").is_visible()
    page.select_option("#f-kind", "tree")
    page.fill("#f-prompt", "The capital of India is")
    page.fill("#p-max_depth", "")
    page.fill("#p-min_branch_threshold", "")
    screenshot(page, "job-list", docs="job-list.png")
    assert page.log.problems() == [] or all("422" in p for p in page.log.problems())
