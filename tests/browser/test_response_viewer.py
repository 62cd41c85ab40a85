"""The response viewer: the most probable path, alternatives, branch switching, explore-from-here."""

from __future__ import annotations

import json

import pytest

from .conftest import SEED_TREE
from .helpers import READY, goto, most_probable_path, read_download, shown_text, visible_ws
from .synthetic import prune_depth

pytestmark = pytest.mark.browser


def tokens_text(page) -> list[str]:
    return page.locator("#tokens .tok").all_text_contents()


def test_switches_branch_on_an_alternative(browser_page, base_url, india, seed_tree_doc, screenshot):
    page = browser_page
    goto(page, f"{base_url}/viewer/response?job={india}")
    original = most_probable_path(seed_tree_doc["tree"])
    assert tokens_text(page) == [shown_text(n["text"]) for n in original]
    # Probability classes.
    first = page.locator("#tokens .tok").first
    assert "p-low" in first.get_attribute("class")  # " Delhi" at 25.4 %
    assert page.locator("#reset").is_disabled()

    first.click()
    panel = page.locator("#token-body")
    alts = panel.locator("[data-role='alternatives'] button.alt")
    assert alts.count() == len(seed_tree_doc["tree"]["candidates"])
    current = panel.locator("button.alt.current")
    assert current.locator(".t").text_content() == visible_ws(" Delhi")
    # Explored alternatives can be chosen, the others are disabled.
    explored = panel.locator("button.alt[data-explored='true']")
    assert explored.count() == len(seed_tree_doc["tree"]["children"])
    unexplored = panel.locator("button.alt[data-explored='false']")
    assert unexplored.count() == len(seed_tree_doc["tree"]["candidates"]) - len(
        seed_tree_doc["tree"]["children"]
    )
    for i in range(unexplored.count()):
        assert unexplored.nth(i).is_disabled()

    panel.locator("button.alt", has_text=visible_ws(" New")).click()
    new_child = next(c for c in seed_tree_doc["tree"]["children"] if c["text"] == " New")
    expected = [new_child, *most_probable_path(new_child)]
    assert tokens_text(page) == [shown_text(n["text"]) for n in expected]
    # The switch point is marked; the rest follows the most probable continuation.
    switched = page.locator("#tokens .tok.switched")
    assert switched.count() == 1
    assert switched.get_attribute("data-index") == "0"
    assert "switches 1" in page.locator("#summary").text_content()
    assert not page.locator("#reset").is_disabled()
    screenshot(page, "response-viewer", docs="response-viewer.png")

    # Switch deeper as well, then download the current path.
    with page.expect_download() as dl:
        page.click("#download")
    doc = json.loads(read_download(dl.value))
    assert doc["switch_points"] == [0]
    assert doc["text"] == "".join(n["text"] for n in expected)
    assert [t["token_id"] for t in doc["tokens"]] == [n["token_id"] for n in expected]
    assert doc["prompt"] == "The capital of India is"

    page.click("#reset")
    assert tokens_text(page) == [shown_text(n["text"]) for n in original]
    assert page.locator("#tokens .tok.switched").count() == 0
    assert page.log.problems() == []


def test_whitespace_toggle(browser_page, base_url, service, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/response?file={service.files_url}/india_capital_tree.json")
    text = "".join(n["text"] for n in most_probable_path(seed_tree_doc["tree"]))
    assert "·" in page.locator("#tokens").text_content()
    page.uncheck("#show-ws")
    assert page.locator("#tokens").text_content() == text
    page.check("#show-ws")
    assert "↵" in page.locator("#tokens").text_content()
    assert page.log.problems() == []


def test_file_input_and_bad_file(browser_page, base_url):
    page = browser_page
    goto(page, f"{base_url}/viewer/response", state="body[data-state=empty]")
    page.set_input_files(
        "#file-input",
        files=[{"name": "bad.json", "mimeType": "application/json", "buffer": b'{"tree": {"text": 3}}'}],
    )
    msg = page.locator("#message .message.error")
    msg.wait_for()
    assert "tree.text" in msg.text_content() and "bad.json" in msg.text_content()
    page.set_input_files("#file-input", str(SEED_TREE))
    page.wait_for_selector(READY, state="attached")
    assert page.locator("#tokens .tok").count() > 5
    assert page.log.page_errors == []


def test_explore_from_here_submits_and_shows_the_new_job(
    browser_page, base_url, service, india, seed_tree_doc
):
    page = browser_page
    goto(page, f"{base_url}/viewer/response?job={india}")
    page.locator("#tokens .tok").first.click()
    row = page.locator("#token-body li", has=page.locator("button.alt", has_text=visible_ws(" **")))
    before = len(service.dispatcher.submitted)
    row.locator("button", has_text="Explore from here").click()
    # The page submitted a job and waits for it: play its worker, with a small tree from its prompt.
    new_id = service.wait_submitted(before + 1)
    job = service.client.get(f"/v1/jobs/{new_id}").json()
    assert job["prompt"] == "The capital of India is **"
    assert job["kind"] == "tree" and job["model"] == "demo"
    # The same parameters as the tree explored from (the india job's, as the server completed them).
    assert job["parameters"] == service.client.get(f"/v1/jobs/{india}").json()["parameters"]
    small = prune_depth(seed_tree_doc, 3)
    small["tree"]["text"] = job["prompt"]
    service.run_tree_job(new_id, small)
    page.wait_for_url(f"**/viewer/response?job={new_id}&from={india}")
    page.wait_for_selector(READY, state="attached")
    assert "The capital of India is **" in page.locator("#prompt").text_content()
    assert "Explored from another tree" in page.locator("#banner").text_content()
    assert page.log.problems() == []


def test_keyboard_moves_along_the_path_and_between_siblings(browser_page, base_url, india, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/response?job={india}")
    root = seed_tree_doc["tree"]
    siblings = sorted(root["children"], key=lambda c: c["prob"], reverse=True)  # " Delhi", " New", ":"
    page.locator("#tokens .tok").first.focus()

    def focused() -> str:
        return page.evaluate("() => document.activeElement.dataset.index")

    assert page.locator("#tokens .tok").first.evaluate("e => getComputedStyle(e).outlineStyle") != "none"
    # Enter opens the token: its alternatives.
    page.keyboard.press("Enter")
    assert page.locator("#token-body button.alt.current .t").text_content() == visible_ws(siblings[0]["text"])
    # ↓ the next sibling (the path switches to its branch), ↑ back.
    page.keyboard.press("ArrowDown")
    expected = [siblings[1], *most_probable_path(siblings[1])]
    assert tokens_text(page) == [shown_text(n["text"]) for n in expected]
    assert focused() == "0"
    page.keyboard.press("ArrowUp")
    assert tokens_text(page)[0] == shown_text(siblings[0]["text"])
    page.keyboard.press("ArrowUp")  # no sibling above the most probable: nothing changes
    assert tokens_text(page)[0] == shown_text(siblings[0]["text"])
    # → the child along the path, ← its parent.
    page.keyboard.press("ArrowRight")
    assert focused() == "1"
    assert page.locator("#tokens .tok.selected").get_attribute("data-index") == "1"
    page.keyboard.press("ArrowLeft")
    assert focused() == "0"
    assert page.log.problems() == []


def test_a_forced_prefix_starts_the_response_in_both_viewers(browser_page, base_url, service, seed_tree_doc):
    """A tree file whose metadata has a prefix (not chat): the response viewer shows the prompt, then the
    response starting with the prefix; the tree viewer's ranked paths and path text begin with it too; the
    downloaded path's text is the response."""
    page = browser_page
    prefix = " **New"
    doc = {**seed_tree_doc, "metadata": {**seed_tree_doc["metadata"], "prefix": prefix}}
    url = service.add_file("prefixed_tree.json", json.dumps(doc))
    goto(page, f"{base_url}/viewer/response?file={url}")
    assert "chat" not in page.locator("#response-card").get_attribute("class").split()
    assert page.locator("#prompt").text_content() == doc["tree"]["text"]
    path = most_probable_path(doc["tree"])
    assert page.locator("#tokens").text_content() == shown_text(prefix + "".join(n["text"] for n in path))
    with page.expect_download() as download:
        page.click("#download")
    saved = json.loads(read_download(download.value))
    assert saved["text"] == prefix + "".join(n["text"] for n in path)

    goto(page, f"{base_url}/viewer/tree?file={url}")
    shown = page.locator("#paths-list li .txt").all_text_contents()
    assert shown and all(text.startswith(visible_ws(prefix)) for text in shown)
    page.locator("#paths-list li").first.click()
    box = page.locator("#details-body [data-role='path']")
    assert box.locator(".prefix-part").text_content() == prefix
    assert box.locator("[data-role='chat-break']").count() == 0
    assert box.text_content().startswith(doc["tree"]["text"] + prefix)
    assert page.log.problems() == []
