"""The tree viewer in a real headless Chromium: rendering, hover details, collapse/expand, files,
completed paths, search, live growth over server-sent events, export."""

from __future__ import annotations

import json
import math
import threading
import time
import xml.etree.ElementTree as ET

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
from .synthetic import prune_depth, synthetic_tree

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


# --------------------------------------------------------------------------- the view of a large tree

IN_VIEW = """(sel) => {
    const box = document.querySelector('#tree-svg').getBoundingClientRect();
    const els = [...document.querySelectorAll(sel)];
    const out = els.filter((e) => {
        const r = e.getBoundingClientRect();
        return r.left < box.left - 1 || r.right > box.right + 1
            || r.top < box.top - 1 || r.bottom > box.bottom + 1;
    });
    return [els.length, out.length];
}"""


def in_view(page, selector: str) -> tuple[int, int]:
    """How many elements match `selector`, and how many of them lie (partly) outside the canvas."""
    total, outside = page.evaluate(IN_VIEW, selector)
    return total, outside


def zoom_scale(page) -> float:
    return float(page.evaluate("() => d3.zoomTransform(document.querySelector('#tree-svg')).k"))


@pytest.fixture(scope="module")
def bushy(service) -> str:
    """A finished job of 268 nodes with forks every few tokens: too big to read whole at once."""
    return service.add_tree_job("bushy", synthetic_tree(268, seed=5, run_range=(1, 3)))


def test_a_large_tree_fits_on_load_and_hides_labels_too_small_to_read(browser_page, base_url, bushy,
                                                                         screenshot):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={bushy}")
    drawn, outside = in_view(page, "#tree-svg g.unit circle.dot")
    assert drawn > 60 and outside == 0  # the whole tree is in view
    assert zoom_scale(page) < 0.6
    svg = page.locator("#tree-svg")
    assert svg.get_attribute("data-labels") == "hidden"
    assert page.locator("#label-hint").is_visible()
    assert not page.locator("#tree-svg g.unit:not(.root) text.lbl").first.is_visible()
    # The prompt and the unit under the pointer keep a label of their size on screen.
    root_label = page.locator("#tree-svg g.unit.root text.lbl")
    assert root_label.is_visible() and root_label.bounding_box()["height"] >= 10
    hovered = page.locator("#tree-svg g.unit:not(.root)").nth(5)
    hovered.hover()
    label = hovered.locator("text.lbl")
    assert label.is_visible() and label.bounding_box()["height"] >= 10
    screenshot(page, "tree-large-fitted")
    # Zoomed in far enough, the labels come back at their one size.
    while zoom_scale(page) < 0.6:
        page.click("#zoom-in")
    assert svg.get_attribute("data-labels") == "shown"
    assert not page.locator("#label-hint").is_visible()
    assert page.locator("#tree-svg g.unit.root text.lbl").is_visible()
    # Fit frames the whole tree again.
    page.click("#zoom-fit")
    assert in_view(page, "#tree-svg g.unit circle.dot")[1] == 0
    assert page.log.problems() == []


def test_a_ranked_path_click_frames_the_whole_path(browser_page, base_url, bushy):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={bushy}")
    for _ in range(8):
        page.click("#zoom-in")  # far in: most of the tree is out of view
    assert in_view(page, "#tree-svg g.unit circle.dot")[1] > 0
    page.locator("#paths-list li").first.click()
    path_units, outside = in_view(page, "#tree-svg g.unit.hl")
    assert path_units >= 3 and outside == 0  # root, end and everything between
    assert page.log.problems() == []


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_export_writes_the_whole_layout_not_the_viewport(browser_page, base_url, service):
    page = browser_page
    job_id = service.add_tree_job("export-big", synthetic_tree(5000, seed=11, run_range=(1, 3)))
    goto(page, f"{base_url}/viewer/tree?job={job_id}")
    page.click("#expand-all")
    laid_out = page.evaluate("() => window.__tokentree.lastRender.units")
    drawn = page.locator("#tree-svg g.unit").count()
    assert laid_out > 1200 and drawn < laid_out  # only the units in view are drawn on screen
    bounds = page.evaluate("() => window.__tokentree.state.bounds")
    width, height = math.ceil(bounds["width"] + 40), math.ceil(bounds["height"] + 40)

    with page.expect_download() as dl:
        page.click("#export-svg")
    svg = read_download(dl.value).decode()
    root = ET.fromstring(svg)
    assert (int(root.get("width")), int(root.get("height"))) == (width, height)
    assert root.get("viewBox") == f"0 0 {width} {height}"
    unit_class = [el.get("class", "").split() for el in root.iter("{http://www.w3.org/2000/svg}g")]
    assert sum("unit" in c for c in unit_class) == laid_out  # every unit, not the viewport's
    assert root.get("data-labels") is None  # an export always shows the labels
    assert page.locator("#tree-svg g.unit").count() == drawn  # the screen is drawn as before

    with page.expect_download() as dl:
        page.click("#export-png")
    size = png_size(read_download(dl.value))
    scale = page.evaluate("() => window.__tokentree.lastExport.scale")
    assert 0 < scale <= 2
    assert size == (round(width * scale), round(height * scale))
    assert page.log.problems() == []


def test_export_json_of_the_current_view_reopens_as_that_view(browser_page, base_url, india, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    delhi = page.locator("#tree-svg g.unit[data-depth='1']", has_text="Delhi").filter(has_not_text="New")
    delhi.first.click()  # fold a branch: the view shows part of the tree
    shown_units = units(page).count()
    with page.expect_download() as dl:
        page.click("#export-json")
    doc = json.loads(read_download(dl.value))
    view = doc["metadata"]["view"]
    assert view["nodes_total"] == node_count(seed_tree_doc)
    assert node_count(doc) == view["nodes_shown"] < view["nodes_total"]
    assert doc["metadata"]["prompt"] == seed_tree_doc["metadata"]["prompt"]
    # Opened as a file, it draws the same units (the collapsed branch says what it hides).
    page.set_input_files("#file-input", files=[{"name": "view.json", "mimeType": "application/json",
                                                "buffer": json.dumps(doc).encode()}])
    page.wait_for_selector(READY, state="attached")
    wait_until(lambda: "File: view.json" in page.locator("#source-name").text_content(), message="the file")
    assert units(page).count() == shown_units
    assert page.log.problems() == []


def test_a_merged_run_says_which_node_each_figure_belongs_to(browser_page, base_url, india):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    unit_with_text(page, "New Delhi").hover()  # the run " New", " Delhi", ".", " "
    body = page.locator("#details-body")
    note = body.locator('[data-role="run-note"]').text_content()
    assert visible_ws(" New") in note and visible_ws(" ") in note
    labels = body.locator(".stat .k").all_text_contents()
    assert "Token id · first" in labels and "Threshold · first" in labels
    assert "Cumulative prob · last" in labels and "Status · last" in labels
    assert "(after the last token)" in body.text_content()
    # One token of the run alone has no such marks.
    body.locator(".seg-strip .tok").nth(1).click()
    assert "Token id" in body.locator(".stat .k").all_text_contents()
    assert body.locator('[data-role="run-note"]').count() == 0
    assert page.log.problems() == []


# --------------------------------------------------------------------------- keyboard and colours


def focused_unit(page) -> str | None:
    return page.locator("#tree-svg g.unit.kbd").first.get_attribute("data-key") if page.locator(
        "#tree-svg g.unit.kbd").count() else None


def test_keyboard_moves_between_parent_children_and_siblings(browser_page, base_url, india, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    page.focus("#tree-svg")
    root_key = page.locator("#tree-svg g.unit.root").get_attribute("data-key")
    assert focused_unit(page) == root_key
    ring = page.locator("#tree-svg g.unit.kbd circle.ring")
    assert ring.evaluate("e => getComputedStyle(e).stroke") != "none"  # the focus is visible
    # → goes to the root's most probable child.
    best = max(seed_tree_doc["tree"]["children"], key=lambda c: c["prob"])
    page.keyboard.press("ArrowRight")
    first = page.locator("#tree-svg g.unit.kbd")
    assert first.get_attribute("data-depth") == "1"
    assert visible_ws(best["text"]) in first.text_content()
    first_key = focused_unit(page)
    page.keyboard.press("ArrowDown")
    second_key = focused_unit(page)
    assert second_key != first_key
    assert page.locator("#tree-svg g.unit.kbd").get_attribute("data-depth") == "1"
    page.keyboard.press("ArrowUp")
    assert focused_unit(page) == first_key
    page.keyboard.press("ArrowLeft")
    assert focused_unit(page) == root_key
    page.keyboard.press("ArrowRight")
    # Enter opens the node: its details.
    page.keyboard.press("Enter")
    token = page.locator('#details-body [data-role="token"]').text_content()
    assert token == visible_ws(best["text"])
    # Space folds it; → opens it again and goes to its child.
    page.keyboard.press("Space")
    assert page.locator("#tree-svg g.unit.kbd.collapsed").count() == 1
    page.keyboard.press("ArrowRight")
    assert page.locator("#tree-svg g.unit.kbd").get_attribute("data-depth") != "1"
    # / goes to the search box, from anywhere.
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement.id") == "search"
    page.keyboard.type("Delhi")
    page.keyboard.press("Enter")
    wait_until(lambda: "matches" in page.locator("#search-info").text_content(), message="search")
    page.keyboard.press("Escape")
    assert page.evaluate("() => document.activeElement.id") == "tree-svg"
    assert page.log.problems() == []


def dot_fills(page) -> dict[str, str]:
    return dict(page.locator("#tree-svg g.unit").evaluate_all(
        "els => els.map(e => [e.dataset.key, e.querySelector('circle.dot').getAttribute('fill')])"))


def test_colour_by_probability_entropy_or_unexplored_mass(browser_page, base_url, india, seed_tree_doc):
    page = browser_page
    goto(page, f"{base_url}/viewer/tree?job={india}")
    legend = page.locator("#color-legend")
    assert "probability" in legend.text_content()
    by_prob = dot_fills(page)
    page.select_option("#color-by", "entropy")
    assert legend.get_attribute("data-mode") == "entropy"
    assert "entropy" in legend.text_content()
    by_entropy = dot_fills(page)
    assert by_entropy.keys() == by_prob.keys() and by_entropy != by_prob
    page.select_option("#color-by", "unexplored")
    assert "unexplored mass" in legend.text_content()
    by_mass = dot_fills(page)
    assert by_mass != by_prob and by_mass != by_entropy
    # The seed tree predates `unexplored_mass`: the viewer derives it from the children (1 minus their
    # probabilities). Completed paths have nothing after them: grey, as the legend's "none" says.
    assert "none" in legend.text_content()
    completed = page.locator("#tree-svg g.unit.leaf:has(tspan.endm.end)").first.get_attribute("data-key")
    assert by_mass[completed] == "#b8bec9"
    root = page.locator("#tree-svg g.unit.root").get_attribute("data-key")
    explored = sum(c["prob"] for c in seed_tree_doc["tree"]["children"])
    assert 0 < 1 - explored < 1 and by_mass[root] not in ("#b8bec9", by_prob[root])
    assert page.log.problems() == []


def test_details_show_the_models_own_probability_and_the_unexplored_mass(browser_page, base_url, tmp_path):
    """A tree built through a sampler: the bar shows the sampler's probability, the details the model's
    own beside it and the mass the node's children leave out."""
    from tokentree.engine.analysis import build_tree
    from tokentree.engine.loading import ModelSpec, load_model
    from tokentree.engine.params import TreeParams

    result = build_tree(load_model(ModelSpec()), "The secret to happiness is",
                        TreeParams(temperature=0.7, top_p=0.9))
    path = tmp_path / "sampled.json"
    path.write_text(result.json_text(), encoding="utf-8")
    node = next(n for n in result.nodes if n.text == " simple")  # a run: " simple", ".", "<eos>"

    def percent(p: float) -> str:  # as the viewer writes a probability
        return "0%" if p == 0 else f"{p * 100:.1f}%" if p >= 0.1 else f"{p * 100:.2f}%"

    page = browser_page
    goto(page, f"{base_url}/viewer/tree", state="body[data-state=empty]")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector(READY, state="attached")
    unit_with_text(page, "simple").hover()
    body = page.locator("#details-body")

    def stats() -> dict[str, str]:
        """The panel's figures by label (a run's labels say "· first" or "· last": left out)."""
        keys = [k.split(" · ")[0] for k in body.locator(".stat .k").all_text_contents()]
        return dict(zip(keys, body.locator(".stat .v").all_text_contents(), strict=True))

    assert body.locator('[data-role="prob"]').text_content() == percent(node.prob)
    assert stats()["Model's prob"] == percent(node.raw_prob) != percent(node.prob)
    # Top-p left " simple" one next token: its child has it all, nothing is unexplored.
    assert stats()["Unexplored mass"] == percent(node.unexplored_mass) == "0%"
    # The prompt's node: its unexplored mass is what its children leave out.
    unit_with_text(page, "The secret").hover()
    assert stats()["Unexplored mass"] == percent(result.nodes[0].unexplored_mass)
    # The tree's coverage, in the "Prompt & parameters" panel.
    coverage = result.metadata["coverage"]
    panel = page.locator("#meta-params").text_content()
    assert f"completed paths' mass{coverage['completed_mass']:.4f}" in panel
    leaves = coverage["leaf_mass"]
    assert f"all leaves' mass{leaves:.4f} (unexplored {1 - leaves:.4f})" in panel
    assert page.log.problems() == []
