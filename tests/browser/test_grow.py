"""Growing a stored tree in place from the viewers, in a real Chromium against the real service
(`tokentree serve`: SQLite and the in-process worker with the demo model): "grow" on an unexplored
candidate in the tree viewer's details, and "Grow here" on an unexplored alternative in the response
viewer; the job runs again and the new branch appears where it was asked for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.utils.cli import tokentree_serve

from .helpers import READY, goto, wait_until
from .test_real_service import submit, wait_finished

pytestmark = pytest.mark.browser

PROMPT = "Once upon a time"
# Small, and cut by max_nodes: many recorded candidates stay unexplored.
PARAMS: dict[str, Any] = {"max_nodes": 60, "max_completed_paths": 5}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, httpx.Client, str]]:
    """`tokentree serve` with one finished tree job: (url, client, job id)."""
    data_dir = tmp_path_factory.mktemp("tokentree-grow")
    with tokentree_serve(data_dir, TOKENTREE_DATA_DIR=str(data_dir)) as client:
        job_id = submit(client, PROMPT, **PARAMS)
        wait_finished(client, job_id)
        yield str(client.base_url).rstrip("/"), client, job_id


def state_has_child(page, parent_key: str, token_id: int) -> bool:
    return bool(page.evaluate(
        "([key, token]) => window.__tokentree.state.tree.nodes.some("
        "(n) => n.parent && n.parent.key === key && n.tokenId === token)", [parent_key, token_id]))


def test_grow_a_candidate_in_the_tree_viewer(browser_page, served, screenshot):
    page = browser_page
    url, client, job_id = served
    goto(page, f"{url}/viewer/tree?job={job_id}")
    before = client.get(f"/v1/jobs/{job_id}").json()
    units = page.locator("#tree-svg g.unit")
    drawn = units.count()
    grow = page.locator("#details-body ul.cand-list li [data-role=grow]")
    # Hover units until one's details offer to grow a candidate (a recorded candidate that is no child).
    for index in range(drawn):
        units.nth(index).hover()
        if grow.count():
            break
    assert grow.count(), "no unit offers a candidate to grow"
    item = grow.first.locator("xpath=..")
    token_id = int(item.get_attribute("data-token-id"))
    owner = item.locator("xpath=..").get_attribute("data-owner")
    # Explored candidates and the chosen token get no button.
    assert page.locator("#details-body li.explored [data-role=grow], #details-body li.chosen [data-role=grow]"
                        ).count() == 0
    grow.first.click()

    def grown() -> dict | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        ended = job["status"] == "succeeded" and job["growths"] and job["growths"][-1]["nodes_after"]
        return job if ended else None

    job = wait_until(grown, timeout=60, message="the growth to finish")
    growth = job["growths"][-1]
    assert (f"n{growth['node_id']}", growth["token_id"]) == (owner, token_id)
    assert growth["nodes_after"] > before["progress"]["nodes"]
    # The viewer followed the job: the new child is in its tree, with every node the job has.
    wait_until(lambda: state_has_child(page, owner, token_id), timeout=20,
               message="the new branch in the viewer")
    wait_until(lambda: page.evaluate("() => window.__tokentree.state.tree.nodeCount")
               == growth["nodes_after"], timeout=20, message="the whole grown tree in the viewer")
    page.wait_for_selector(READY, state="attached")
    assert units.count() > drawn  # drawn, not only loaded
    assert "succeeded" in page.locator("#job-status").text_content()
    screenshot(page, "tree-viewer-grown")
    assert page.log.problems() == []


def test_grow_an_alternative_in_the_response_viewer(browser_page, served, screenshot):
    page = browser_page
    url, client, job_id = served
    wait_finished(client, job_id)
    goto(page, f"{url}/viewer/response?job={job_id}")
    tokens = page.locator("#tokens .tok")
    panel = page.locator("#token-body")
    button = panel.locator("button[data-role=grow]")
    for index in range(tokens.count()):
        tokens.nth(index).click()
        if button.count():
            break
    assert button.count(), "no position offers an alternative to grow"
    row = panel.locator("li", has=page.locator("button[data-role=grow]")).first
    alternative = row.locator("button.alt .t").text_content()
    row.locator("button[data-role=grow]").click()
    page.wait_for_selector("#banner :text('Grown in place')", timeout=60_000)
    # The path follows the new branch: the alternative at that position, switched to, and now explored.
    switched = page.locator("#tokens .tok.switched")
    assert switched.count() == 1 and switched.get_attribute("data-index") == str(index)
    assert tokens.nth(index).text_content() == alternative
    assert tokens.count() >= index + 1
    current = panel.locator("button.alt.current .t").text_content()
    assert current == alternative
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and len(job["growths"]) == 2
    screenshot(page, "response-viewer-grown")
    assert page.log.problems() == []


def test_grow_a_leaf_further_in_the_tree_viewer(browser_page, served):
    page = browser_page
    url, client, job_id = served
    wait_finished(client, job_id)
    goto(page, f"{url}/viewer/tree?job={job_id}")
    units = page.locator("#tree-svg g.unit")
    more = page.locator("#details-body .grow-more [data-role=grow]")
    for index in range(units.count()):  # a leaf max_nodes left open
        units.nth(index).hover()
        if more.count():
            break
    assert more.count(), "no leaf offers to grow further"
    leaf_key = page.locator("#details-body").get_attribute("data-end-key")
    more.first.click()

    def grown() -> dict | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        ended = job["status"] == "succeeded" and job["growths"][-1]["nodes_after"]
        return job if ended and job["growths"][-1]["token_id"] is None else None

    growth = wait_until(grown, timeout=60, message="the growth to finish")["growths"][-1]
    assert f"n{growth['node_id']}" == leaf_key
    has_children = "(key) => window.__tokentree.state.tree.nodes.some((n) => n.parent?.key === key)"
    wait_until(lambda: page.evaluate(has_children, leaf_key), timeout=20,
               message="the leaf's new children in the viewer")
    assert page.log.problems() == []
