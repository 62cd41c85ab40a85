"""The compare page in a real Chromium against the real API: two stored tree jobs of one prompt with known
differences, drawn as one tree coloured by side, with the API's counts, both distributions on hover, and
a ranked disagreement that frames its node when clicked; two local files; and trees it must refuse."""

from __future__ import annotations

import copy
import json

import pytest

from .conftest import SEED_TREE
from .helpers import READY, SETTLED, goto, wait_until

pytestmark = pytest.mark.browser

SIDE_COLORS = {"both": "#8a94a6", "a": "#2563eb", "b": "#ea580c"}  # js/compare.js


def with_thresholds(node: dict) -> dict:
    """The seed tree predates recorded thresholds: mark every node with candidates as expanded."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.get("candidates"):
            n["threshold"] = 0.1
        stack.extend(n["children"])
    return node


def deepest_fork(node: dict) -> dict:
    """The deepest node with candidates along the first children, at least 4 levels down."""
    found = node
    while node["children"]:
        node = node["children"][0]
        if node.get("candidates") and node["depth"] >= 4:
            found = node
            break
    return found


@pytest.fixture(scope="module")
def pair(service) -> dict:
    """Jobs "a" and "b": the seed tree, and a copy without the root's third branch (":", 63 nodes), with a
    new root branch " Mumbai" of 2 nodes, " Delhi" and " New" swapped (so the most probable paths part at
    once), and a node 4 levels down whose next token B puts elsewhere (the largest disagreement)."""
    a = json.loads(SEED_TREE.read_text(encoding="utf-8"))
    with_thresholds(a["tree"])
    b = copy.deepcopy(a)
    b["metadata"]["parameters"]["min_branch_threshold"] = 0.2
    root = b["tree"]
    dropped = root["children"].pop(2)
    assert dropped["text"] == ":"
    cands = {c["text"]: c for c in root["candidates"]}
    cands[" Delhi"]["prob"], cands[" New"]["prob"] = cands[" New"]["prob"], cands[" Delhi"]["prob"]
    kids = {c["text"]: c for c in root["children"]}
    kids[" Delhi"]["prob"], kids[" New"]["prob"] = kids[" New"]["prob"], kids[" Delhi"]["prob"]
    root["candidates"].append({"text": " Mumbai", "prob": 0.05, "token_id": 99_999})
    leaf = {"text": ".", "prob": 0.9, "token_id": 235265, "depth": 2, "is_finished": True, "candidates": [],
            "children": []}
    root["children"].append({"text": " Mumbai", "prob": 0.05, "token_id": 99_999, "depth": 1,
                             "is_finished": False, "threshold": 0.1, "children": [leaf],
                             "candidates": [{"text": ".", "prob": 0.9, "token_id": 235265}]})
    fork = deepest_fork(root)
    fork["candidates"] = [{"text": " elsewhere", "prob": 0.95, "token_id": 88_888}]
    ids = {"a": service.add_tree_job("cmp-a", a), "b": service.add_tree_job("cmp-b", b)}
    report = service.client.get("/v1/compare", params={**ids, "top": 5})
    assert report.status_code == 200, report.text
    return {**ids, "report": report.json(), "docs": {"a": a, "b": b}, "fork_text": fork["text"]}


def unit_fill(page, key: str) -> str:
    return page.locator(f"#tree-svg g.unit[data-key='{key}'] circle.dot").get_attribute("fill")


def in_view(page, key: str) -> bool:
    """The unit's dot lies inside the canvas, clear of the toolbar."""
    dot = page.locator(f"#tree-svg g.unit[data-key='{key}'] circle.dot")
    if dot.count() == 0:
        return False
    box, canvas = dot.bounding_box(), page.locator("#tree-svg").bounding_box()
    if box is None:
        return False
    across = canvas["x"] <= box["x"] and box["x"] + box["width"] <= canvas["x"] + canvas["width"]
    down = canvas["y"] + 50 <= box["y"] and box["y"] + box["height"] <= canvas["y"] + canvas["height"]
    return across and down


def test_the_merged_tree_shows_the_apis_comparison(browser_page, service, pair, screenshot):
    page = browser_page
    report = pair["report"]
    assert (report["shared_nodes"], report["only_a"], report["only_b"]) == (174 - 63, 63, 2)
    goto(page, f"{service.url}/viewer/compare?a={pair['a']}&b={pair['b']}")

    counts = {side: page.locator(f"#cmp-counts dd[data-count={side}]").text_content() for side in SIDE_COLORS}
    assert counts == {"both": str(report["shared_nodes"]), "a": str(report["only_a"]),
                      "b": str(report["only_b"])}
    assert page.locator("#cmp-prompt").text_content() == "The capital of India is"
    assert "min_branch_threshold A 0.1 · B 0.2" in page.locator("#cmp-differences").text_content()
    parting = page.locator("#cmp-parting").text_content()
    assert "after the prompt" in parting and "A “·Delhi”" in parting and "B “·New”" in parting
    assert report["parting"]["a"]["text"] == " Delhi" and report["parting"]["b"]["text"] == " New"
    legend = page.locator("#side-legend").text_content()
    assert "both trees" in legend and "A only" in legend and "B only" in legend

    # Coloured by side: the prompt is in both, ":" only in A, " Mumbai" only in B.
    units = page.locator("#tree-svg g.unit")
    keys = {units.nth(i).locator("text").text_content().split("  ")[0]: units.nth(i).get_attribute("data-key")
            for i in range(units.count())}
    colon = next(key for label, key in keys.items() if label.startswith(":"))
    mumbai = next(key for label, key in keys.items() if label.startswith("·Mumbai"))
    assert unit_fill(page, colon) == SIDE_COLORS["a"]
    assert unit_fill(page, mumbai) == SIDE_COLORS["b"]
    root_key = page.locator("#tree-svg g.unit.root").get_attribute("data-key")
    assert unit_fill(page, root_key) == SIDE_COLORS["both"]

    # Both distributions side by side, with the API's distance, on hover of a shared node.
    page.locator("#tree-svg g.unit.root").hover()
    root_distance = next(d for d in report["disagreements"] if d["tokens"] == [])["distance"]
    assert page.locator("#details-body [data-role=distance]").text_content().endswith(f"{root_distance:.3f}")
    rows = page.locator("#details-body table.cmp-dist tbody tr")
    delhi = rows.filter(has_text="·Delhi").first.locator("td.p")
    assert delhi.nth(0).text_content().strip() != delhi.nth(1).text_content().strip()  # swapped in B
    assert rows.filter(has_text="·Mumbai").first.locator("td.p").nth(0).text_content().strip() == "·"

    # The ranked list is the API's ranking; the first is the node B moved elsewhere.
    ranked = page.locator("#ranked-list li")
    top = report["disagreements"][0]
    assert ranked.nth(0).get_attribute("data-key") == f"an{top['a_node']}"
    assert ranked.nth(0).locator(".p").text_content() == f"{top['distance']:.3f}"
    assert [ranked.nth(i).locator(".p").text_content() for i in range(5)] == [
        f"{d['distance']:.3f}" for d in report["disagreements"][:5]]
    screenshot(page, "compare-page")
    assert page.log.problems() == []


def test_a_ranked_disagreement_frames_its_node(browser_page, service, pair):
    page = browser_page
    goto(page, f"{service.url}/viewer/compare?a={pair['a']}&b={pair['b']}")
    page.click("#collapse-all")
    top = pair["report"]["disagreements"][0]
    key = f"an{top['a_node']}"
    assert page.locator(f"#tree-svg g.unit[data-key='{key}']").count() == 0  # hidden under a closed branch

    page.locator("#ranked-list li").nth(0).click()
    wait_until(lambda: in_view(page, key), message="the disagreement's node framed")
    assert page.locator(f"#tree-svg g.unit.hl[data-key='{key}']").count() == 1  # its path is highlighted
    assert page.locator("#ranked-list li.current").get_attribute("data-key") == key
    assert page.locator("#details-body").get_attribute("data-key") == key
    distance = page.locator("#details-body [data-role=distance]").text_content()
    assert distance.endswith(f"{top['distance']:.3f}")
    # It is opened: its children are drawn beside it.
    unit = page.locator(f"#tree-svg g.unit[data-key='{key}']")
    assert int(unit.get_attribute("data-children")) >= 1 and "collapsed" not in unit.get_attribute("class")
    assert page.log.problems() == []


def test_two_local_files_compare_without_the_service(browser_page, service, pair, tmp_path):
    page = browser_page
    goto(page, f"{service.url}/viewer/compare", state="body[data-state=empty]")
    for side in ("a", "b"):
        path = tmp_path / f"{side}.json"
        path.write_text(json.dumps(pair["docs"][side]), encoding="utf-8")
        page.set_input_files(f"#file-{side}", str(path))
    page.wait_for_selector(READY, state="attached")
    report = pair["report"]
    assert page.locator("#cmp-counts dd[data-count=a]").text_content() == str(report["only_a"])
    assert page.locator("#cmp-counts dd[data-count=b]").text_content() == str(report["only_b"])
    assert page.locator("#ranked-list li").nth(0).locator(".p").text_content() == \
        f"{report['disagreements'][0]['distance']:.3f}"
    assert page.log.problems() == []


def test_trees_it_cannot_compare_are_refused_in_plain_words(browser_page, service, pair):
    page = browser_page
    other = service.job("india")  # the same prompt: comparable
    goto(page, f"{service.url}/viewer/compare?a={other}&b={service.job('lp')}", state=SETTLED)
    assert "is a logprobs job: pick a token-tree job" in page.locator("#canvas-message").text_content()
    goto(page, f"{service.url}/viewer/compare?a=not-an-id&b={pair['b']}", state=SETTLED)
    message = page.locator("#canvas-message").text_content()
    assert "is not a job id" in message and "Copy it again" in message and "uuid" not in message.lower()
    different = service.add_tree_job("cmp-other-prompt", {
        "metadata": {"prompt": "Once upon a time", "parameters": {}},
        "tree": {"text": "Once upon a time", "prob": 1.0, "children": []}})
    goto(page, f"{service.url}/viewer/compare?a={pair['a']}&b={different}", state=SETTLED)
    assert "different prompts" in page.locator("#canvas-message").text_content()


def test_the_job_list_picks_two_jobs_to_compare(browser_page, service, pair):
    page = browser_page
    goto(page, f"{service.url}/")
    for side in ("a", "b"):
        box = page.locator(f"#jobs-body tr[data-job='{pair[side]}'] input[data-compare]")
        wait_until(lambda box=box: box.count() == 1, message=f"the Compare box of job {side}")
        box.check()
    assert page.locator(f"#jobs-body tr[data-job='{service.job('lp')}'] input[data-compare]").count() == 0
    link = page.locator("#open-compare")
    assert link.get_attribute("href") == f"/viewer/compare?a={pair['a']}&b={pair['b']}"
    link.click()
    page.wait_for_selector(READY, state="attached")
    assert page.locator("#cmp-counts dd[data-count=a]").text_content() == str(pair["report"]["only_a"])
    assert page.log.problems() == []
