"""The job list page: recent jobs with status, progress and links; the submit form, whose parameter
fields come from the server's own description of them (GET /v1/parameters)."""

from __future__ import annotations

import pytest

from .conftest import MODELS
from .helpers import goto, wait_until

pytestmark = pytest.mark.browser


def test_lists_jobs_with_links_and_submits(browser_page, base_url, service, india, lp, screenshot):
    page = browser_page
    goto(page, f"{base_url}/")
    rows = page.locator("#jobs-body tr[data-job]")
    wait_until(lambda: rows.count() >= 2, message="job rows")
    india_row = page.locator(f"#jobs-body tr[data-job='{india}']")
    assert "succeeded" in india_row.text_content()
    assert "The capital of India is" in india_row.text_content()
    assert "174 nodes" in india_row.text_content()
    assert "5 completed" in india_row.text_content()
    for link, view in (("Tree", "tree"), ("Response", "response")):
        assert india_row.locator("a", has_text=link).get_attribute("href") == f"/viewer/{view}?job={india}"
    lp_row = page.locator(f"#jobs-body tr[data-job='{lp}']")
    assert lp_row.locator("a", has_text="Log-probs").get_attribute("href") == f"/viewer/logprobs?job={lp}"
    # Models come from /v1/models.
    assert page.locator("#f-model option").all_text_contents() == list(MODELS)

    # The parameter fields: one per parameter the server describes, in its order, with its defaults.
    described = service.client.get("/v1/parameters").json()
    for kind in ("tree", "logprobs"):
        fields = page.locator(f"#params-grid .field[data-kind='{kind}']")
        names = fields.evaluate_all("els => els.map(e => e.dataset.field)")
        assert names == [p["name"] for p in described[kind]]
    for p in described["tree"]:
        field = page.locator(f"#p-{p['name']}")
        assert float(field.get_attribute("placeholder")) == p["default"]  # JavaScript writes 1.0 as "1"
        assert field.get_attribute("step") == ("1" if p["type"] == "integer" else "any")
        assert float(field.get_attribute("min")) == p["minimum"]
        assert float(field.get_attribute("max")) == p["maximum"]

    # Client-side check: an empty prompt.
    page.click("#submit")
    assert "Enter a prompt" in page.locator(".field[data-field='prompt']").text_content()
    # Server-side 422: the API's own message lands on the field it names.
    page.fill("#f-prompt", "The capital of France is")
    page.fill("#p-max_depth", "-3")
    refused = service.client.post("/v1/jobs", json={"prompt": "p", "parameters": {"max_depth": -3}})
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "parameters", "max_depth"]
    page.click("#submit")
    err = page.locator(".field[data-field='max_depth'] .err")
    err.wait_for()
    assert err.text_content() == error["msg"]
    assert "not accepted" in page.locator("#form-result").text_content()
    # A good submission: the form sends only what was filled in; the server fills in its defaults.
    before = len(service.dispatcher.submitted)
    page.fill("#p-max_depth", "12")
    page.fill("#p-min_branch_threshold", "0.2")
    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.click("#submit")
    assert sent.value.post_data_json == {
        "prompt": "The capital of France is",
        "model": "demo",
        "kind": "tree",
        "parameters": {"min_branch_threshold": 0.2, "max_depth": 12},
        "chat": False,
        "prefix": None,
    }
    page.locator("#form-result .message.info").wait_for()
    new_id = service.wait_submitted(before + 1)
    assert page.locator("#form-result a").first.get_attribute("href") == f"/viewer/tree?job={new_id}"
    job = service.client.get(f"/v1/jobs/{new_id}").json()
    defaults = {p["name"]: p["default"] for p in described["tree"]}
    assert job["parameters"] == defaults | {"min_branch_threshold": 0.2, "max_depth": 12}
    assert (job["status"], job["prompt"], job["kind"], job["model"]) == (
        "queued", "The capital of France is", "tree", "demo")
    new_row = page.locator(f"#jobs-body tr[data-job='{new_id}']")
    wait_until(lambda: new_row.count() == 1, message="the new row")
    assert new_row.get_attribute("data-status") == "queued"
    # Log-probability jobs show their own parameters.
    page.select_option("#f-kind", "logprobs")
    assert page.locator("#p-top_k").is_visible()
    assert not page.locator("#p-max_depth").is_visible()
    page.select_option("#f-kind", "tree")
    page.fill("#f-prompt", "The capital of India is")
    page.fill("#p-max_depth", "")
    page.fill("#p-min_branch_threshold", "")
    screenshot(page, "job-list")
    # The refused submission is the only failed request (the browser logs its 422).
    assert page.log.problems() == [] or all("422" in p for p in page.log.problems())


def test_the_form_submits_a_score_job(browser_page, base_url, service):
    """Kind "score" asks for the text to score and shows its own parameters, the include_prompt switch a
    checkbox; the API's 422 for a missing text lands on the text field; the job links the log-prob viewer."""
    page = browser_page
    goto(page, f"{base_url}/")
    assert not page.locator("#f-text").is_visible()
    page.select_option("#f-kind", "score")
    wait_until(lambda: page.locator("#f-text").is_visible(), message="the text field")
    described = service.client.get("/v1/parameters").json()["score"]
    fields = page.locator("#params-grid .field[data-kind='score']")
    assert fields.evaluate_all("els => els.map(e => e.dataset.field)") == [p["name"] for p in described]
    switch = page.locator("#params-grid .field[data-kind='score'][data-field='include_prompt'] input")
    assert switch.get_attribute("type") == "checkbox" and not switch.is_checked()
    page.fill("#f-prompt", "Once upon a time")
    page.click("#submit")  # no text: the server refuses it, naming the field
    err = page.locator(".field[data-field='text'] .err")
    err.wait_for()
    assert "needs the text to score" in err.text_content()
    before = len(service.dispatcher.submitted)
    page.fill("#f-text", ", there was a little car.")
    switch.check()
    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.click("#submit")
    body = sent.value.post_data_json
    assert (body["kind"], body["text"], body["parameters"]) == (
        "score", ", there was a little car.", {"include_prompt": True})
    page.locator("#form-result .message.info").wait_for()
    new_id = service.wait_submitted(before + 1)
    assert page.locator("#form-result a").first.get_attribute("href") == f"/viewer/logprobs?job={new_id}"
    job = service.client.get(f"/v1/jobs/{new_id}").json()
    assert (job["kind"], job["text"], job["parameters"]["include_prompt"]) == (
        "score", ", there was a little car.", True)
    row = page.locator(f"#jobs-body tr[data-job='{new_id}']")
    wait_until(lambda: row.count() == 1, message="the new row")
    assert "scored text" in row.text_content()
    assert row.locator("a", has_text="Log-probs").get_attribute("href") == f"/viewer/logprobs?job={new_id}"
    page.select_option("#f-kind", "tree")
    assert not page.locator("#f-text").is_visible()
    assert page.log.problems() == [] or all("422" in p for p in page.log.problems())
