"""The inline drawing as Jupyter shows it: the HTML of `Tree._repr_html_` put in a page of a headless
Chromium whose every request is refused. It draws, and asks for nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import tokentree
from tests.python_api.conftest import PROMPT, SMALL

CHROMIUM = os.environ.get("TOKENTREE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def refuse(route: Any, requested: list[str]) -> None:
    requested.append(route.request.url)
    route.abort()


def dismiss(dialog: Any, dialogs: list[str]) -> None:
    dialogs.append(dialog.message)
    dialog.dismiss()


@pytest.mark.browser
def test_the_drawing_renders_with_the_network_closed() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make services`, or set TOKENTREE_CHROMIUM")
    from playwright import sync_api

    # Markup in the prompt (it is also the root's label) must stay text: an alert would be a dialog.
    tree = tokentree.build_tree("<img src=x onerror=alert(1)> " + PROMPT, progress=False, **SMALL)
    requested: list[str] = []
    dialogs: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
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
            browser.close()
    assert requested == [] and dialogs == [] and errors == []
    assert 1 < drawn < len(tree)
    assert box is not None and box["width"] > 300 and box["height"] > 100
    assert first_tooltip is not None and "cumulative" in first_tooltip and "next:" in first_tooltip
    assert "<img src=x onerror=alert(1)>" in header and f"{len(tree)} nodes" in header
