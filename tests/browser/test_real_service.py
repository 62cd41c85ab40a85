"""The viewers in a real Chromium against the REAL service, on stored jobs run with the demo model.

Embedded mode: a `tokentree serve` subprocess (SQLite under a temporary data folder, the in-process
worker). Postgres mode: the same API on the test session's Postgres database (emptied) and Redis, with
`LocalWorker` as its dispatcher in this process. The README's pictures (docs/img/) are taken here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.cli import tokentree_serve

from .conftest import DATA_DIR, SEED_LOGPROBS, SEED_TREE
from .helpers import READY, SETTLED, goto, most_probable_path, shown_text, visible_ws, wait_until
from .service import file_server
from .synthetic import count_nodes as node_count

pytestmark = pytest.mark.browser

# The screenshot fixture writes docs/img/ only for this module: the README shows the real service.
DOCS_IMAGES = True

PROMPT = "Once upon a time"
XSS_PROMPT = "<img src=x onerror=alert(1)>"
# The demo model never stops after this prompt: keep its tree small.
XSS_PARAMS: dict[str, Any] = {"max_depth": 30, "max_nodes": 200}
# Big enough to take seconds in the embedded worker even on an idle machine (the CLI alone needs ~1 s).
GROWING: dict[str, Any] = {
    "min_branch_threshold": 0.02,
    "max_branch_threshold": 0.1,
    "soft_queue_limit": 100_000,
    "max_depth": 80,
    "max_completed_paths": 100_000,
    "max_nodes": 12_000,
}
TERMINAL = {"succeeded", "failed", "cancelled"}


# --------------------------------------------------------------------------- helpers


def submit(client: httpx.Client, prompt: str, kind: str = "tree", **parameters: Any) -> str:
    response = client.post("/v1/jobs", json={"prompt": prompt, "kind": kind, "parameters": parameters})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_finished(
    client: httpx.Client, job_id: str, timeout: float = 60.0, why: Callable[[], str] = str
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            assert job["status"] == "succeeded", (job, why())
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}\n{why()}")
        time.sleep(0.3)


def fmt_num(x: float) -> str:
    """common.js fmtNum for the values a node records."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:.3f}" if abs(x) >= 0.001 else f"{x:.2e}".replace("e-0", "e-")


def stat_value(page, label: str) -> str:
    stat = page.locator("#details-body .stat", has=page.locator(".k", has_text=label)).first
    return stat.locator(".v").text_content()


def assert_inert(page) -> None:
    """Nothing that only the injected markup could have made, and no dialog ever opened."""
    assert page.locator("img").count() == 0
    assert page.locator("[onerror]").count() == 0
    scripts = page.locator("script").evaluate_all("els => els.map(e => e.getAttribute('src'))")
    assert all(src and src.startswith("/static/") for src in scripts), scripts
    assert page.log.dialogs == []


# --------------------------------------------------------------------------- the embedded service


@dataclass
class RealService:
    url: str
    client: httpx.Client
    log_path: Path
    jobs: dict[str, str] = field(default_factory=dict)
    trees: dict[str, dict] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def tree(self, name: str) -> dict:
        if name not in self.trees:
            response = self.client.get(f"/v1/jobs/{self.jobs[name]}/tree")
            assert response.status_code == 200, response.text
            self.trees[name] = response.json()
        return self.trees[name]


@pytest.fixture(scope="module")
def real_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealService]:
    """`tokentree serve` on a free port (embedded: SQLite + in-process worker), with a tree job and a
    log-probability job on "Once upon a time" run to the end."""
    data_dir = tmp_path_factory.mktemp("tokentree-serve")
    with tokentree_serve(data_dir, TOKENTREE_DATA_DIR=str(data_dir)) as client:
        url = str(client.base_url).rstrip("/")
        service = RealService(url=url, client=client, log_path=data_dir / "serve.log")
        service.jobs["tree"] = submit(client, PROMPT)
        service.jobs["logprobs"] = submit(client, PROMPT, kind="logprobs", max_new_tokens=40)
        for job_id in service.jobs.values():
            wait_finished(client, job_id, why=service.log_tail)
        yield service


@pytest.fixture(scope="module")
def seed_server() -> Iterator[str]:
    """The seed files (tests/browser/data) on another loopback origin, with CORS, for `?file=URL`."""
    with file_server(DATA_DIR) as url:
        yield url


# --------------------------------------------------------------------------- embedded: stored jobs


def test_job_list_shows_the_stored_jobs(browser_page, real_service, screenshot):
    page = browser_page
    tree_id, lp_id = real_service.jobs["tree"], real_service.jobs["logprobs"]
    goto(page, f"{real_service.url}/")
    tree_row = page.locator(f"#jobs-body tr[data-job='{tree_id}']")
    lp_row = page.locator(f"#jobs-body tr[data-job='{lp_id}']")
    wait_until(lambda: tree_row.count() == 1 and lp_row.count() == 1, message="both job rows")
    assert tree_row.get_attribute("data-status") == "succeeded"
    assert PROMPT in tree_row.text_content()
    nodes = node_count(real_service.tree("tree"))
    assert f"{nodes:,} nodes" in tree_row.text_content()
    assert "5 completed" in tree_row.text_content()
    assert tree_row.locator("a", has_text="Tree").get_attribute("href") == f"/viewer/tree?job={tree_id}"
    assert (
        tree_row.locator("a", has_text="Response").get_attribute("href") == f"/viewer/response?job={tree_id}"
    )
    assert lp_row.get_attribute("data-status") == "succeeded"
    assert lp_row.locator("a", has_text="Log-probs").get_attribute("href") == f"/viewer/logprobs?job={lp_id}"
    assert page.locator("#f-model option").all_text_contents() == ["demo"]
    screenshot(page, "real-job-list")
    assert page.log.problems() == []


def test_tree_viewer_renders_the_stored_job(browser_page, real_service, screenshot):
    page = browser_page
    doc = real_service.tree("tree")
    tree_id = real_service.jobs["tree"]
    goto(page, f"{real_service.url}/viewer/tree?job={tree_id}")
    root = page.locator("#tree-svg g.unit.root")
    assert root.count() == 1
    assert PROMPT in root.text_content()
    assert page.locator("#meta-prompt").text_content() == PROMPT
    stats = page.locator("#stats").text_content()
    assert f"{node_count(doc):,} nodes" in stats and "5 completed" in stats, stats
    assert "succeeded" in page.locator("#job-status").text_content()
    params = page.locator("#meta-params").text_content()
    for name in ("min_branch_threshold", "soft_queue_limit", "max_completed_paths"):
        assert name in params

    # Hovering a node fills the details panel with what the worker recorded for it.
    children = doc["tree"]["children"]
    assert len(children) >= 2
    first_level = page.locator("#tree-svg g.unit[data-depth='1']")
    assert first_level.count() == len(children)
    for i in range(first_level.count()):
        first_level.nth(i).hover()
        token = page.locator("#details-body [data-role='token']").text_content()
        node = next(c for c in children if visible_ws(c["text"]) == token)
        assert stat_value(page, "Threshold") == fmt_num(node["threshold"])
        assert stat_value(page, "Queue depth") == fmt_num(node["queue_depth"])
        assert stat_value(page, "Entropy") == f"{fmt_num(node['entropy'])} nats"
        assert stat_value(page, "Token id") == str(node["token_id"])
        assert stat_value(page, "Node id") == str(node["id"])
    # The root's values as well (hover the prompt).
    root.hover()
    assert stat_value(page, "Threshold") == fmt_num(doc["tree"]["threshold"])
    assert stat_value(page, "Queue depth") == fmt_num(doc["tree"]["queue_depth"])

    # The completed paths: 5, most probable first, as the API ranks them.
    items = page.locator("#paths-list li")
    assert items.count() == 5
    best = real_service.client.get(f"/v1/jobs/{tree_id}/paths").json()["paths"][0]
    shown = items.nth(0).locator(".txt").text_content()
    assert shown.replace("·", " ").replace("↵", "\n") in best["text"], (shown, best["text"])
    items.nth(1).click()
    assert page.locator("#tree-svg g.unit.hl").count() >= 2
    page.locator("#tree-svg").click(position={"x": 5, "y": 400})  # clear the pinned path
    page.click("#zoom-reset")  # the click centred the view on the path's end
    first_level.nth(0).hover()
    page.wait_for_timeout(100)
    screenshot(page, "real-tree-viewer", docs="tree-viewer.png")
    assert page.log.problems() == []


def test_response_viewer_follows_and_switches(browser_page, real_service, screenshot):
    page = browser_page
    doc = real_service.tree("tree")
    tree_id = real_service.jobs["tree"]
    goto(page, f"{real_service.url}/viewer/response?job={tree_id}")
    tokens = page.locator("#tokens .tok")
    original = most_probable_path(doc["tree"])
    assert tokens.all_text_contents() == [shown_text(n["text"]) for n in original]
    assert PROMPT in page.locator("#prompt").text_content()

    # Switch at the first fork on the path to an explored alternative.
    index, fork = next((i, n) for i, n in enumerate([doc["tree"], *original[:-1]]) if len(n["children"]) >= 2)
    tokens.nth(index).click()
    panel = page.locator("#token-body")
    explored = panel.locator("button.alt[data-explored='true']:not(.current)")
    assert explored.count() == len(fork["children"]) - 1
    assert panel.locator("button.alt").count() == len(fork["candidates"])
    chosen_text = explored.first.locator(".t").text_content()
    explored.first.click()
    child = next(c for c in fork["children"] if visible_ws(c["text"]) == chosen_text)
    expected = [*original[:index], child, *most_probable_path(child)]
    assert tokens.all_text_contents() == [shown_text(n["text"]) for n in expected]
    switched = page.locator("#tokens .tok.switched")
    assert switched.count() == 1 and switched.get_attribute("data-index") == str(index)
    assert not page.locator("#reset").is_disabled()
    screenshot(page, "real-response-viewer", docs="response-viewer.png")
    page.click("#reset")
    assert tokens.all_text_contents() == [shown_text(n["text"]) for n in original]

    # "Explore from here" on an unexplored alternative submits a real job and opens it when done.
    index = next(
        i for i, n in enumerate([doc["tree"], *original[:-1]]) if len(n["candidates"]) > len(n["children"])
    )
    tokens.nth(index).click()
    row = panel.locator("li", has=page.locator("button.alt[data-explored='false']")).first
    alt = row.locator("button.alt .t").text_content().replace("·", " ")
    row.locator("button", has_text="Explore from here").click()
    page.wait_for_url(f"**/viewer/response?job=*&from={tree_id}", timeout=30_000)
    page.wait_for_selector(READY, state="attached", timeout=20_000)
    new_prompt = PROMPT + "".join(n["text"] for n in original[:index]) + alt
    assert page.locator("#prompt").text_content().endswith(new_prompt)
    assert "Explored from another tree" in page.locator("#banner").text_content()
    assert tokens.count() >= 1
    assert page.log.problems() == []


def test_logprobs_viewer_renders_the_stored_job(browser_page, real_service, screenshot):
    page = browser_page
    lp_id = real_service.jobs["logprobs"]
    response = real_service.client.get(f"/v1/jobs/{lp_id}/logprobs.jsonl")
    assert response.status_code == 200
    records = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert len(records) == 1 and records[0]["prompt"] == PROMPT
    goto(page, f"{real_service.url}/viewer/logprobs?job={lp_id}")
    cards = page.locator("#cards article.lp-card")
    assert cards.count() == 1
    card = cards.first
    assert card.locator(".lp-prompt").text_content() == PROMPT
    data = records[0]["data"]
    assert card.locator(".tok").all_text_contents() == [shown_text(d["token"]) for d in data]
    for j, d in enumerate(data):
        want = "p-high" if d["prob"] >= 70 else "p-mid" if d["prob"] >= 30 else "p-low"
        assert want in card.locator(".tok").nth(j).get_attribute("class")
    # The first token (",": two thirds against " there") has a tooltip listing both.
    card.locator(".tok").first.hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    assert tip.locator("tr").count() == len(data[0]["other_tokens"])
    assert tip.locator("tr.chosen td.t").text_content() == shown_text(data[0]["token"])
    assert "perplexity" in card.text_content()
    screenshot(page, "real-logprobs-viewer", docs="logprobs-viewer.png")
    assert page.log.problems() == []


def test_a_score_job_in_the_logprobs_viewer_marks_the_unlikely_tokens(browser_page, real_service, screenshot):
    """A score job run by the real worker: its record in the log-prob viewer, the prompt's own tokens
    dimmed, the tokens the model gave under 1% outlined, the text's totals as the record has them."""
    page = browser_page
    text = ", there was a little car who lived in the forest."
    response = real_service.client.post("/v1/jobs", json={
        "prompt": PROMPT, "kind": "score", "text": text, "parameters": {"include_prompt": True, "top_k": 3}})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    wait_finished(real_service.client, job_id, why=real_service.log_tail)
    [record] = [json.loads(line) for line in
                real_service.client.get(f"/v1/jobs/{job_id}/logprobs.jsonl").text.splitlines()]
    goto(page, f"{real_service.url}/viewer/logprobs?job={job_id}")
    card = page.locator("#cards article.lp-card")
    assert card.count() == 1
    tokens = card.locator(".tok")
    data = record["data"]
    assert tokens.all_text_contents() == [shown_text(d["token"]) for d in data]
    classes = [tokens.nth(j).get_attribute("class").split() for j in range(len(data))]
    assert ["unlikely" in c for c in classes] == [d["prob"] < 1.0 for d in data]
    assert ["prompt-tok" in c for c in classes] == [d["part"] == "prompt" for d in data]
    car = next(j for j, d in enumerate(data) if d["token"] == " ca")
    assert "unlikely" in classes[car]
    totals = card.locator("[data-role='totals']").text_content()
    assert f"perplexity {record['totals']['text']['perplexity']:.2f}" in totals
    assert f"text tokens {record['totals']['text']['tokens']}" in totals
    tokens.nth(car).hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    assert f"rank {data[car]['rank']}" in tip.text_content() and "unlikely" in tip.text_content()
    screenshot(page, "real-score-viewer")
    assert page.log.problems() == []


def test_the_prefix_and_the_chat_prompt_in_the_tree_and_response_viewers(browser_page, real_service):
    """A chat tree with a forced prefix: every path's text is the response, the prefix first (the API's
    paths, the tree viewer's ranked paths and path text); the response viewer shows the prompt as the
    user's turn and the response apart from it, starting with the prefix."""
    page = browser_page
    prompt, prefix = "Tell me a story", "Once upon a time"
    response = real_service.client.post("/v1/jobs", json={
        "prompt": prompt, "chat": True, "prefix": prefix, "parameters": {"max_depth": 30, "max_nodes": 300}})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    wait_finished(real_service.client, job_id, why=real_service.log_tail)
    paths = real_service.client.get(f"/v1/jobs/{job_id}/paths").json()["paths"]
    assert paths and all(p["text"].startswith(prefix) for p in paths)

    goto(page, f"{real_service.url}/viewer/tree?job={job_id}")
    items = page.locator("#paths-list li")
    assert items.count() == len(paths)
    assert items.locator(".txt").all_text_contents() == [visible_ws(p["text"]) for p in paths]
    items.first.click()
    path_box = page.locator("#details-body [data-role='path']")
    assert path_box.locator(".prompt-part").text_content() == prompt
    assert path_box.locator("[data-role='chat-break']").count() == 1  # the response on a line of its own
    assert path_box.locator(".prefix-part").text_content() == prefix
    assert path_box.text_content() == prompt + paths[0]["text"]

    goto(page, f"{real_service.url}/viewer/response?job={job_id}")
    assert "chat" in page.locator("#response-card").get_attribute("class").split()
    assert page.locator("#prompt").text_content() == prompt
    shown = page.locator("#tokens [data-role='prefix']")
    assert shown.text_content() == shown_text(prefix)
    assert page.locator("#tokens").text_content().startswith(shown_text(prefix))
    assert page.log.problems() == []


def test_compare_page_on_two_temperatures(browser_page, real_service, screenshot):
    """The README's comparison in the browser: the demo model's tree at temperatures 0.7 and 1.0, drawn
    as one tree with the API's counts; the largest disagreement is a click away."""
    page = browser_page
    client = real_service.client
    rule = {"min_branch_threshold": 0.03, "max_branch_threshold": 0.2}
    cool, warm = (submit(client, PROMPT, temperature=t, **rule) for t in (0.7, 1.0))
    for job_id in (cool, warm):
        wait_finished(client, job_id, why=real_service.log_tail)
    report = client.get("/v1/compare", params={"a": cool, "b": warm}).json()
    assert report["only_a"] > 0 and report["only_b"] > 0 and report["shared_expanded"] > 0
    goto(page, f"{real_service.url}/viewer/compare?a={cool}&b={warm}")
    for side, count in (("both", report["shared_nodes"]), ("a", report["only_a"]), ("b", report["only_b"])):
        assert page.locator(f"#cmp-counts dd[data-count={side}]").text_content() == f"{count:,}"
    assert "temperature A 0.7 · B 1" in page.locator("#cmp-differences").text_content()
    top = report["disagreements"][0]
    first = page.locator("#ranked-list li").nth(0)
    assert first.locator(".p").text_content() == f"{top['distance']:.3f}"
    first.click()
    assert page.locator("#details-body").get_attribute("data-key") == f"an{top['a_node']}"
    for _ in range(2):  # show more of the tree around it, labels still readable
        page.click("#zoom-out")
    page.wait_for_timeout(300)
    screenshot(page, "real-compare-page", docs="compare-page.png")
    assert page.log.problems() == []


def test_seed_files_load_in_the_real_app(browser_page, real_service, seed_server):
    page = browser_page
    seed = json.loads(SEED_TREE.read_text(encoding="utf-8"))
    # ?file= on another origin (CORS), the tree and the response viewer.
    goto(page, f"{real_service.url}/viewer/tree?file={seed_server}/india_capital_tree.json")
    assert seed["metadata"]["prompt"] in page.locator("#tree-svg g.unit.root").text_content()
    assert f"{node_count(seed):,} nodes" in page.locator("#stats").text_content()
    assert page.locator("#paths-list li").count() == 5
    goto(page, f"{real_service.url}/viewer/response?file={seed_server}/india_capital_tree.json")
    assert page.locator("#tokens .tok").all_text_contents() == [
        shown_text(n["text"]) for n in most_probable_path(seed["tree"])
    ]
    goto(page, f"{real_service.url}/viewer/logprobs?file={seed_server}/logprobs_sample.jsonl")
    records = [line for line in SEED_LOGPROBS.read_text().splitlines() if line.strip()]
    assert page.locator("#cards article").count() == len(records)
    # The file inputs.
    goto(page, f"{real_service.url}/viewer/tree", state="body[data-state=empty]")
    page.set_input_files("#file-input", str(SEED_TREE))
    page.wait_for_selector(READY, state="attached")
    assert "india_capital_tree.json" in page.locator("#source-name").text_content()
    assert f"{node_count(seed):,} nodes" in page.locator("#stats").text_content()
    goto(page, f"{real_service.url}/viewer/logprobs", state="body[data-state=empty]")
    page.set_input_files("#file-input", str(SEED_LOGPROBS))
    page.wait_for_selector(READY, state="attached")
    assert page.locator("#cards article").count() == len(records)
    assert page.log.problems() == []


def test_tree_viewer_grows_while_the_job_runs(browser_page, real_service, screenshot):
    page = browser_page
    # A short job first, so that the page most likely opens on a queued job with no tree yet: it waits
    # (without a failed request in the console) and draws the tree as the worker expands it.
    submit(real_service.client, PROMPT, max_nodes=200)
    job_id = submit(real_service.client, PROMPT, **GROWING)
    goto(page, f"{real_service.url}/viewer/tree?job={job_id}", state=SETTLED, timeout=20_000)
    first_state = page.locator("body").get_attribute("data-state")
    seen: list[int] = []

    def count() -> int | None:
        text = page.locator("#stats").text_content() or ""
        if " nodes" not in text:
            return None
        return int(text.split(" nodes")[0].replace(",", ""))

    def done() -> bool:
        n = count()
        if n is not None and (not seen or seen[-1] != n):
            seen.append(n)
        return "succeeded" in (page.locator("#job-status").text_content() or "") and n == GROWING["max_nodes"]

    wait_until(done, timeout=120, interval=0.1, message=f"the tree to reach {GROWING['max_nodes']} nodes")
    assert len(seen) >= 2, seen  # drawn while the worker expanded it, not only once at the end
    assert seen == sorted(seen), seen
    job = real_service.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"]["nodes"] == GROWING["max_nodes"]
    page.wait_for_selector(READY, state="attached")
    screenshot(page, "real-tree-viewer-grown")
    assert page.log.problems() == []
    # The README's job list: the jobs of this module so far, all run by the demo model.
    goto(page, f"{real_service.url}/")
    page.locator(f"#jobs-body tr[data-job='{job_id}']").wait_for()
    page.fill("#f-prompt", "The capital of France is")
    screenshot(page, "real-job-list-more", docs="job-list.png")
    print(f"first state {first_state}; node counts seen while growing: {seen}")


def test_html_in_a_real_prompt_stays_inert(browser_page, real_service, screenshot):
    page = browser_page
    job_id = submit(real_service.client, XSS_PROMPT, **XSS_PARAMS)
    wait_finished(real_service.client, job_id, why=real_service.log_tail)
    goto(page, f"{real_service.url}/")
    row = page.locator(f"#jobs-body tr[data-job='{job_id}']")
    wait_until(lambda: row.count() == 1, message="the job's row")
    assert row.locator(".prompt").text_content() == XSS_PROMPT
    assert_inert(page)
    goto(page, f"{real_service.url}/viewer/tree?job={job_id}")
    assert page.locator("#meta-prompt").text_content() == XSS_PROMPT
    assert XSS_PROMPT in page.locator("#tree-svg g.unit.root").text_content()
    page.locator("#tree-svg g.unit.root").hover()
    assert page.locator("#details-body [data-role='path']").text_content().startswith(XSS_PROMPT)
    page.click("#expand-all")
    page.wait_for_timeout(200)
    screenshot(page, "real-xss-tree")
    assert_inert(page)
    assert page.log.problems() == []


# --------------------------------------------------------------------------- Postgres


@pytest.mark.services
def test_tree_viewer_on_postgres_with_a_real_worker(
    browser_page, postgres_url, clean_pg, redis_url, screenshot
):
    from tests.utils.servers import live_api_for, postgres_settings
    from tokentree.models.db import make_session_factory
    from tokentree.workers.local import LocalWorker

    settings = postgres_settings(postgres_url, redis_url, models={"demo": "demo"})
    factory = make_session_factory(clean_pg)
    worker = LocalWorker(settings, factory, name="browser-test")
    worker.start()
    try:
        with live_api_for(settings, worker, session_factory=factory) as api:
            job_id = submit(api.client, PROMPT)
            job = wait_finished(api.client, job_id, timeout=90)
            doc = api.client.get(f"/v1/jobs/{job_id}/tree").json()
            page = browser_page
            goto(page, f"{api.url}/viewer/tree?job={job_id}")
            assert PROMPT in page.locator("#tree-svg g.unit.root").text_content()
            stats = page.locator("#stats").text_content()
            assert f"{job['progress']['nodes']:,} nodes" in stats and "5 completed" in stats, stats
            assert node_count(doc) == job["progress"]["nodes"]
            assert page.locator("#paths-list li").count() == 5
            page.locator("#tree-svg g.unit[data-depth='1']").first.hover()
            assert stat_value(page, "Threshold") not in ("", "—")
            screenshot(page, "real-postgres-tree-viewer")
            assert page.log.problems() == []
    finally:
        worker.stop()
