"""The tree viewer in a real headless Chromium: rendering, hover details, collapse/expand, files,
completed paths, search, live growth over server-sent events, export."""

from __future__ import annotations

import json
import threading
import time

import pytest

from .conftest import SEED_TREE
from .helpers import (
    READY,
    SETTLED,
    drop_file,
    goto,
    read_download,
    unit_with_text,
    units,
    visible_ws,
    wait_until,
)
from .service import tree_nodes
from .synthetic import count_nodes as node_count
from .synthetic import prune_depth

pytestmark = pytest.mark.browser


def segment_count(doc: dict) -> int:
    """Runs of single-child nodes count as one: 1 (root) + children of the root and of every fork."""
    total, stack = 1, [doc["tree"]]
    root = doc["tree"]
    while stack:
        node = stack.pop()
        if node is root or len(node["children"]) >= 2:
            total += len(node["children"])
        stack.extend(node["children"])
    return total


def test_renders_job_tree_without_console_errors(browser_page, base_url, india, seed_tree_doc, screenshot):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    n_segments = segment_count(seed_tree_doc)
    # Small enough to be fully expanded at first: every segment is drawn once.
    assert units(page).count() == n_segments
    root = page.locator("#tree-svg g.unit.root")
    assert root.count() == 1
    assert "The capital of India is" in root.text_content()
    stats = page.locator("#stats").text_content()
    assert f"{node_count(seed_tree_doc)} nodes" in stats
    assert f"{n_segments} segments" in stats
    # Prompt & parameters panel.
    assert page.locator("#meta-prompt").text_content() == seed_tree_doc["metadata"]["prompt"]
    params = page.locator("#meta-params").text_content()
    for name in seed_tree_doc["metadata"]["parameters"]:
        assert name in params
    # Node size and colour follow the probability.
    r = {
        float(x)
        for x in page.locator("#tree-svg g.unit:not(.root) circle").evaluate_all(
            "els => els.map(e => e.getAttribute('r'))"
        )
    }
    assert len(r) > 5
    # Links between the views carry the job.
    response_link = page.locator('.nav a[data-view="response"]')
    assert response_link.get_attribute("href") == f"/viewer/response?job={india}"
    unit_with_text(page, "New Delhi").hover()
    page.wait_for_timeout(100)
    screenshot(page, "tree-viewer", docs="tree-viewer.png")
    assert page.log.problems() == []


def test_hover_fills_details_and_highlights_path(browser_page, base_url, india):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    unit_with_text(page, "New Delhi").hover()
    body = page.locator("#details-body")
    assert body.locator('[data-role="token"]').text_content() == visible_ws(" New")
    assert body.locator('[data-role="prob"]').text_content() == "16.4%"
    assert "1622" in body.text_content()  # token id
    # The segment is " New", " Delhi", ".", " ": the path runs to its end.
    assert body.locator('[data-role="path"]').text_content() == "The capital of India is New Delhi. "
    chosen = body.locator('[data-role="candidates"] li.chosen')
    assert chosen.count() == 1
    assert chosen.locator(".t").text_content() == visible_ws(" New")
    # Explored siblings are marked as well.
    assert body.locator('[data-role="candidates"] li.explored').count() == 2
    # Cumulative probability, entropy etc. have their places.
    for label in ("Cumulative prob", "Entropy", "Threshold", "Queue depth"):
        assert label.lower() in body.text_content().lower()
    # The path from the root to the hovered segment is highlighted: root, the segment, one link.
    assert page.locator("#tree-svg g.unit.hl").count() == 2
    assert page.locator("#tree-svg path.link.hl").count() == 1
    assert page.log.problems() == []


def test_collapse_and_expand(browser_page, base_url, india, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    total = units(page).count()
    delhi = (
        page.locator("#tree-svg g.unit[data-depth='1']", has_text="Delhi").filter(has_not_text="New").first
    )
    delhi.click()
    collapsed = units(page).count()
    assert collapsed < total
    assert page.locator("#tree-svg g.unit.collapsed").count() == 1
    # The collapsed branch says how many nodes it hides.
    assert "+" in page.locator("#tree-svg g.unit.collapsed").text_content()
    delhi = page.locator("#tree-svg g.unit.collapsed")
    delhi.click()
    assert units(page).count() == total

    page.click("#collapse-all")
    assert units(page).count() == 1 + len(seed_tree_doc["tree"]["children"])
    page.click("#expand-all")
    assert units(page).count() == total
    # Clicking the root collapses everything under it.
    page.locator("#tree-svg g.unit.root").click()
    assert units(page).count() == 1
    page.locator("#tree-svg g.unit.root").click()
    assert units(page).count() > 1
    assert page.log.problems() == []


def test_node_mode_expanding_runs_down_single_child_chains(browser_page, base_url, india, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    page.uncheck("#merge-runs")
    page.click("#collapse-all")
    # The root's children, each run down its single-child chain to the next fork.
    assert units(page).count() < node_count(seed_tree_doc)
    assert page.locator("#tree-svg g.unit[data-depth='1']").count() == len(seed_tree_doc["tree"]["children"])
    assert page.locator("#tree-svg g.unit.collapsed[data-children='1']").count() == 0
    for _ in range(3):
        collapsed = page.locator("#tree-svg g.unit.collapsed")
        if collapsed.count() == 0:
            break
        collapsed.first.click()
        # After an expansion, no single-child node is left collapsed: chains run to the next fork.
        assert page.locator("#tree-svg g.unit.collapsed[data-children='1']").count() == 0
    # Each unit is one token in node mode.
    assert set(units(page).evaluate_all("els => els.map(e => e.dataset.tokens)")) == {"1"}
    page.click("#expand-all")
    assert units(page).count() == node_count(seed_tree_doc)
    assert page.log.problems() == []


def test_zoom_buttons_and_reset(browser_page, base_url, india):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    vp = page.locator("#tree-svg g.viewport")
    initial = vp.get_attribute("transform")
    page.click("#zoom-in")
    zoomed = vp.get_attribute("transform")
    assert zoomed != initial
    page.click("#zoom-out")
    page.click("#zoom-out")
    assert vp.get_attribute("transform") not in (initial, zoomed)
    # Pan with the mouse.
    before = vp.get_attribute("transform")
    box = page.locator("#tree-svg").bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + box["height"] - 120)
    page.mouse.down()
    page.mouse.move(box["x"] + 300, box["y"] + box["height"] - 60, steps=5)
    page.mouse.up()
    assert vp.get_attribute("transform") != before
    page.click("#zoom-reset")
    assert vp.get_attribute("transform") == initial
    page.click("#zoom-fit")
    assert page.log.problems() == []


def test_file_input_loads_seed_layout(browser_page, base_url, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree", state="body[data-state=empty]")
    assert page.locator("#empty-state").is_visible()
    page.set_input_files("#file-input", str(SEED_TREE))
    page.wait_for_selector(READY, state="attached")
    assert units(page).count() == segment_count(seed_tree_doc)
    assert "india_capital_tree.json" in page.locator("#source-name").text_content()
    assert not page.locator("#empty-state").is_visible()
    assert page.log.problems() == []


def test_file_url_parameter_and_drag_and_drop(browser_page, base_url, service, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?file={service.files_url}/india_capital_tree.json")
    assert units(page).count() == segment_count(seed_tree_doc)
    # Drop a smaller tree on the page: it replaces the first.
    small = prune_depth(seed_tree_doc, 2)
    drop_file(page, "small.json", json.dumps(small))
    wait_until(
        lambda: "small.json" in page.locator("#source-name").text_content(), message="the dropped file"
    )
    wait_until(lambda: units(page).count() == segment_count(small), message="the dropped tree")
    assert page.log.problems() == []


BAD_FILES = [
    ("broken.json", '{"metadata": {}, "tree": {"text": "x", ', "not valid JSON"),
    ("wrong.json", '{"nodes": [], "edges": []}', 'no "tree" object'),
    (
        "noprob.json",
        json.dumps(
            {
                "metadata": {},
                "tree": {
                    "text": "p",
                    "prob": 1.0,
                    "children": [{"text": " a", "children": [], "candidates": []}],
                },
            }
        ),
        "tree.children[0].prob is missing",
    ),
    (
        "percent.json",
        json.dumps(
            {"tree": {"text": "p", "prob": 1.0, "children": [{"text": " a", "prob": 55.0, "children": []}]}}
        ),
        "not a percentage",
    ),
    ("list.json", "[1, 2, 3]", "must be a JSON object"),
    ("empty.json", "   ", "is empty"),
]


def test_malformed_files_get_a_clear_message(browser_page, base_url, service):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree", state="body[data-state=empty]")
    for name, text, expected in BAD_FILES:
        page.set_input_files(
            "#file-input", files=[{"name": name, "mimeType": "application/json", "buffer": text.encode()}]
        )
        msg = page.locator("#canvas-message .message.error")
        msg.wait_for()
        wait_until(lambda n=name, m=msg: n in m.text_content(), message=f"the message for {name}")
        assert expected in msg.text_content(), msg.text_content()
        assert page.locator("body").get_attribute("data-state") == "error"
    # A log-probability file: named as such, with a link to the right viewer.
    lp = '{"prompt": "p", "response": "r", "data": []}\n{"prompt": "q", "response": "r", "data": []}\n'
    page.set_input_files(
        "#file-input", files=[{"name": "lp.jsonl", "mimeType": "application/json", "buffer": lp.encode()}]
    )
    wait_until(lambda: "log-probability" in page.locator("#canvas-message").text_content(), message="lp hint")
    assert page.locator("#canvas-message a[href='/viewer/logprobs']").count() == 1
    # A good file after bad ones still loads.
    page.set_input_files("#file-input", str(SEED_TREE))
    page.wait_for_selector(READY, state="attached")
    assert page.locator("#canvas-message .message").count() == 0
    # A ?file= URL that is not there.
    goto(page, f"{base_url}/viewer/tree?file={service.files_url}/missing.json", state=SETTLED)
    assert "404" in page.locator("#canvas-message").text_content()
    assert page.log.page_errors == []


def test_completed_paths_and_search(browser_page, base_url, india, seed_tree_doc, screenshot):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    items = page.locator("#paths-list li")
    assert items.count() == 5
    # Ranked by cumulative probability, highest first.
    first_text = items.nth(0).locator(".txt").text_content()
    assert first_text == visible_ws(" Delhi. \n<end_of_turn>")
    page.click("#collapse-all")
    items.nth(2).click()  # " New Delhi. \n<end_of_turn>"
    assert items.nth(2).get_attribute("class") == "active"
    hl = page.locator("#tree-svg g.unit.hl")
    assert hl.count() >= 3  # revealed and highlighted down to the leaf
    assert "<end_of_turn>" in page.locator("#details-body [data-role='path']").text_content()
    assert "New Delhi." in page.locator("#details-body [data-role='path']").text_content()

    page.click("#collapse-all")
    page.fill("#search", "Kolkata")
    page.press("#search", "Enter")
    info = page.locator("#search-info")
    wait_until(lambda: "matches" in info.text_content(), message="search results")
    assert info.text_content().startswith("1 of ")
    assert page.locator("#tree-svg g.unit.match").count() >= 1
    assert page.locator("#tree-svg g.unit.match-current").count() == 1
    page.click("#search-next")
    assert info.text_content().startswith("2 of ")
    screenshot(page, "tree-search")
    page.fill("#search", "no such text anywhere")
    page.press("#search", "Enter")
    wait_until(lambda: info.text_content() == "No matches.", message="no matches")
    assert page.log.problems() == []


def test_live_growth_over_server_sent_events(browser_page, base_url, service, seed_tree_doc):
    page = browser_page
    # A running job whose worker the test plays: its tree grows a few levels at a time while the page
    # follows the job's event stream, then the job succeeds.
    nodes = tree_nodes(seed_tree_doc)
    levels = ((0, 1), (2, 3), (4, 6), (7, max(n.depth for n in nodes)))
    stages = [[n for n in nodes if low <= n.depth <= high] for low, high in levels]
    metadata = seed_tree_doc["metadata"]
    job_id = service.submit(metadata["prompt"], **metadata["parameters"])
    service.start(job_id)
    db_ids: dict[int, int] = {}
    service.grow(job_id, stages[0], db_ids)
    goto(page, f"{base_url}/viewer/tree?job={job_id}")
    assert "running" in page.locator("#job-status").text_content()
    page.click("#zoom-in")
    transform = page.locator("#tree-svg g.viewport").get_attribute("transform")

    def work() -> None:
        for stage in stages[1:]:
            time.sleep(1.2)  # the page refetches a running job's tree at most once a second
            service.grow(job_id, stage, db_ids)
        time.sleep(1.2)
        service.finish(job_id)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    seen = set()

    def grown():
        text = page.locator("#stats").text_content()
        seen.add(text.split(" nodes")[0])
        return f"{node_count(seed_tree_doc)} nodes" in text

    try:
        wait_until(grown, timeout=15, message="the tree to grow to its final size")
        assert len(seen) >= 2, seen  # it grew in steps, not in one final load
        wait_until(lambda: "succeeded" in page.locator("#job-status").text_content(), message="the end event")
    finally:
        worker.join(timeout=15)
    # The user's zoom is kept across refreshes.
    assert page.locator("#tree-svg g.viewport").get_attribute("transform") == transform
    assert units(page).count() == segment_count(seed_tree_doc)
    assert page.log.problems() == []


def test_export_svg_and_png(browser_page, base_url, india):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    with page.expect_download() as dl:
        page.click("#export-svg")
    svg = read_download(dl.value).decode()
    assert svg.startswith("<svg")
    assert "The capital of India is" in svg
    assert "<style>" in svg  # self-contained styles
    with page.expect_download() as dl:
        page.click("#export-png")
    png = read_download(dl.value)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 5000
    assert page.log.problems() == []
