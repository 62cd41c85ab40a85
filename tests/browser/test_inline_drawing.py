"""The Python API's inline drawing as Jupyter shows it: the HTML of `tokentree.Tree._repr_html_` put in a
page of the suite's headless Chromium whose every request is refused. It draws, and asks for nothing.
(Here, not in tests/python_api: one process can run one Playwright session, the suite's.)"""

from __future__ import annotations

from typing import Any

import tokentree

PROMPT = "Once upon a time"
SMALL = {"max_nodes": 400, "max_completed_paths": 20}  # the demo model's tree, whole (about 200 nodes)


def refuse(route: Any, requested: list[str]) -> None:
    requested.append(route.request.url)
    route.abort()


def dismiss(dialog: Any, dialogs: list[str]) -> None:
    dialogs.append(dialog.message)
    dialog.dismiss()


def test_the_drawing_renders_with_the_network_closed(browser: Any) -> None:
    # Markup in the prompt (it is also the root's label) must stay text: an alert would be a dialog.
    tree = tokentree.build_tree("<img src=x onerror=alert(1)> " + PROMPT, progress=False, **SMALL)
    requested: list[str] = []
    dialogs: list[str] = []
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    try:
        page.route("**/*", lambda route: refuse(route, requested))
        page.on("dialog", lambda dialog: dismiss(dialog, dialogs))
        page.on("console", lambda line: errors.extend([line.text] if line.type == "error" else []))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_content(f"<!doctype html><html><body>{tree._repr_html_()}</body></html>")
        page.wait_for_timeout(300)
        circles = page.locator(".tokentree-tree svg circle")
        drawn = circles.count()
        box = page.locator(".tokentree-tree svg").bounding_box()
        first_tooltip = page.locator(".tokentree-tree svg g title").nth(1).text_content()
        header = page.locator(".tokentree-tree").inner_text()
    finally:
        page.close()
    assert requested == [] and dialogs == [] and errors == []
    assert 1 < drawn < len(tree)
    assert box is not None and box["width"] > 300 and box["height"] > 100
    assert first_tooltip is not None and "cumulative" in first_tooltip and "next:" in first_tooltip
    assert "<img src=x onerror=alert(1)>" in header and f"{len(tree)} nodes" in header
