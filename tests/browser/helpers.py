"""Small helpers shared by the browser tests (no `wait_for_function`: the pages' CSP forbids eval)."""

from __future__ import annotations

import json
import time

READY = "body[data-state=ready]"
SETTLED = "body[data-state=ready], body[data-state=error], body[data-state=empty], body[data-state=waiting]"


def goto(page, url: str, state: str = READY, timeout: float = 10_000) -> None:
    page.goto(url)
    page.wait_for_selector(state, timeout=timeout, state="attached")


def visible_ws(s: str) -> str:
    """The viewers' visible-whitespace rendering (common.js visibleWs) for plain ASCII cases."""
    return s.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def units(page):
    return page.locator("#tree-svg g.unit")


def unit_with_text(page, text: str):
    return page.locator("#tree-svg g.unit", has_text=text).first


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message} (last value: {last!r})")


def drop_file(page, name: str, text: str, mime: str = "application/json") -> None:
    """Simulate dropping a file on the page (dragenter, dragover, drop with a DataTransfer)."""
    page.evaluate(
        """([name, text, mime]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, { type: mime }));
            for (const type of ["dragenter", "dragover", "drop"]) {
                const ev = new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true });
                document.body.dispatchEvent(ev);
            }
        }""",
        [name, text, mime],
    )


def read_download(download) -> bytes:
    with open(download.path(), "rb") as fh:
        return fh.read()


def write_perf(name: str, values: dict) -> None:
    from .conftest import ROOT

    out = ROOT / "artifacts" / "perf.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {}
    if out.exists():
        try:
            data = json.loads(out.read_text())
        except ValueError:
            data = {}
    data[name] = values
    out.write_text(json.dumps(data, indent=2))


def most_probable_path(node: dict) -> list[dict]:
    """The nodes after `node` along its most probable children (the first on ties, as the viewers)."""
    path = []
    while node["children"]:
        node = max(node["children"], key=lambda c: c["prob"])
        path.append(node)
    return path


def shown_text(s: str) -> str:
    """How the response and log-probability viewers show text: visible whitespace, line breaks kept."""
    return "↵\n".join(visible_ws(part) for part in s.split("\n"))
