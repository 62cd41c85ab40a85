"""The log-probability viewer: one card per JSONL record, tooltips with the alternatives."""

from __future__ import annotations

import json

import pytest

from .conftest import SEED_LOGPROBS, seed_records
from .helpers import READY, drop_file, goto, shown_text, wait_until

pytestmark = pytest.mark.browser


def test_renders_logprobs_job_with_tooltips(browser_page, base_url, lp, screenshot):
    page = browser_page
    # A job holds one record (the API serves it as one JSONL line): the seed's first. Files with several
    # records are the next tests'.
    records = seed_records()[:1]
    goto(page, f"{base_url}/viewer/logprobs?job={lp}")
    cards = page.locator("#cards article.lp-card")
    assert cards.count() == len(records)
    for i, rec in enumerate(records):
        card = cards.nth(i)
        assert card.locator(".lp-prompt").text_content() == rec["prompt"]
        toks = card.locator(".tok")
        assert toks.count() == len(rec["data"])
        assert toks.all_text_contents() == [shown_text(d["token"]) for d in rec["data"]]
    # Colour classes follow the probability (percentages in the file).
    first = records[0]["data"]
    for j, d in enumerate(first):
        cls = cards.nth(0).locator(".tok").nth(j).get_attribute("class")
        want = "p-high" if d["prob"] >= 70 else "p-mid" if d["prob"] >= 30 else "p-low"
        assert want in cls
    # Hover: a tooltip lists the alternatives, the chosen one marked.
    target = cards.nth(0).locator(".tok").nth(1)  # "The" at 45 %
    target.hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    rows = tip.locator("tr")
    assert rows.count() == len(first[1]["other_tokens"])
    assert tip.locator("tr.chosen td.t").text_content() == "The"
    assert "45.0%" in tip.text_content()
    assert "perplexity" in cards.nth(0).text_content()
    screenshot(page, "logprobs-viewer", docs="logprobs-viewer.png")
    page.mouse.move(5, 400)
    tip.wait_for(state="hidden")
    assert page.log.problems() == []


def test_renders_a_dropped_or_picked_jsonl_file(browser_page, base_url):
    page = browser_page
    goto(page, f"{base_url}/viewer/logprobs", state="body[data-state=empty]")
    page.set_input_files("#file-input", str(SEED_LOGPROBS))
    page.wait_for_selector(READY, state="attached")
    assert page.locator("#cards article").count() == len(seed_records())
    one = json.dumps(seed_records()[1]) + "\n"
    drop_file(page, "one.jsonl", one, "application/x-ndjson")
    wait_until(lambda: page.locator("#cards article").count() == 1, message="the dropped file's single card")
    assert "USA" in page.locator("#cards").text_content()
    assert page.log.problems() == []


def test_a_sampled_record_shows_the_models_own_probability(browser_page, base_url, tmp_path):
    """A logprobs record made through a sampler: each token's tooltip gives the model's own probability
    beside the sampler's, where they differ."""
    from tokentree.engine.analysis import analyze_logprobs
    from tokentree.engine.loading import ModelSpec, load_model
    from tokentree.engine.params import LogprobsParams

    record = analyze_logprobs(load_model(ModelSpec()), "Once upon a time",
                              LogprobsParams(max_new_tokens=4, temperature=0.5))
    path = tmp_path / "sampled.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    page = browser_page
    goto(page, f"{base_url}/viewer/logprobs", state="body[data-state=empty]")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector(READY, state="attached")
    first = record["data"][0]
    assert abs(first["raw_prob"] - first["prob"]) > 1  # percentages: temperature 0.5 sharpens
    page.locator("#cards .tok").nth(0).hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    assert "model's own" in tip.text_content()
    raw = first["raw_prob"]  # as the viewer writes a percentage
    assert (f"{raw:.1f}%" if raw >= 10 else f"{raw:.2f}%") in tip.text_content()
    assert page.log.problems() == []


def test_file_url_and_bad_files(browser_page, base_url, service):
    page = browser_page
    goto(page, f"{base_url}/viewer/logprobs?file={service.files_url}/logprobs_sample.jsonl")
    assert page.locator("#cards article").count() == len(seed_records())
    good = json.dumps(seed_records()[0])
    cases = [
        (good + "\n{not json\n", "line 2"),
        ('{"prompt": "p", "response": "r"}\n', 'no "data" array'),
        ('{"prompt": "p", "data": [{"token": "a", "prob": "high"}]}\n', "data[0].prob must be a number"),
        ('{"prompt": "p", "data": [{"logprob": -1}]}\n', "data[0].token is missing"),
        (SEED_LOGPROBS.read_text().replace('"prob": 87.75790315324407', '"prob": 187.7'), "percentage"),
        ('{"metadata": {}, "tree": {"text": "x", "children": []}}', "token tree"),
    ]
    for text, expected in cases:
        page.set_input_files(
            "#file-input", files=[{"name": "bad.jsonl", "mimeType": "text/plain", "buffer": text.encode()}]
        )
        msg = page.locator("#message .message.error")
        wait_until(lambda e=expected, m=msg: m.count() == 1 and e in m.text_content(), message=expected)
        assert page.locator("body").get_attribute("data-state") == "error"
    # The last was a token tree: the message links to the tree viewer.
    assert page.locator("#message a[href='/viewer/tree']").count() == 1
    assert page.log.page_errors == []
