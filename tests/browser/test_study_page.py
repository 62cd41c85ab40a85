"""The study page (/viewer/study?id=...) against the real API: a study's progress followed while a test
plays its worker, its forks as the API ranks them (the ranking switchable), links to each tree and to
compare two jobs of one prompt, cancel, the nodes downloaded; and the job list naming each job's study.

Its own service (not the session's): a study adds jobs that the job list's other tests do not expect.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from .conftest import SEED_TREE
from .helpers import goto, read_download, visible_ws, wait_until
from .service import BrowserService, file_server, tree_nodes

pytestmark = pytest.mark.browser

STUDY = {"name": "capitals", "template": "The capital of {country} is",
         "values": [{"country": "India"}, {"country": "France"}],
         "parameter_sets": [{"max_nodes": 500}, {"max_nodes": 200}]}


@pytest.fixture(scope="module")
def study_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserService]:
    from bench.factories import RecordingDispatcher
    from tests.utils.servers import embedded_settings, live_api_for
    from tokentree.migrations import upgrade_database

    settings = embedded_settings(tmp_path_factory.mktemp("study"), rate_limit_per_minute=0)
    upgrade_database(settings.sqlalchemy_url)
    files: Path = tmp_path_factory.mktemp("files")
    with file_server(files) as files_url, live_api_for(settings, RecordingDispatcher()) as api:
        yield BrowserService(url=api.url, client=api.client, session_factory=api.session_factory,
                             dispatcher=api.dispatcher, files_dir=files, files_url=files_url)


def fork_rows(page) -> list[tuple[str, str]]:
    rows = page.locator("#forks-body tr[data-job]").evaluate_all(
        "rows => rows.map(r => [r.dataset.job, r.dataset.node])")
    return [(job, node) for job, node in rows]


def api_forks(service: BrowserService, study_id: str, by: str) -> list[dict]:
    return service.client.get(f"/v1/studies/{study_id}/forks?by={by}&limit=20").json()["forks"]


def test_the_study_page_follows_ranks_links_and_cancels(browser_page, study_service, screenshot) -> None:
    service, page = study_service, browser_page
    study = service.client.post("/v1/studies", json=STUDY).json()
    india, india_small, france, _france_small = (job["id"] for job in study["jobs"])
    goto(page, f"{service.url}/viewer/study?id={study['id']}")
    assert page.locator("#study-name").text_content() == "Study: capitals"
    assert page.locator("#study-total").text_content() == "0 of 4 jobs ended"
    rows = page.locator("#study-jobs-body tr[data-job]")
    assert rows.count() == 4
    first = page.locator(f"#study-jobs-body tr[data-job='{india}']")
    assert first.locator("a", has_text="Tree").get_attribute("href") == f"/viewer/tree?job={india}"
    assert "max_nodes=500" in first.text_content()  # the parameter that differs between the jobs
    assert first.locator("a.compare-link").count() == 0
    second = page.locator(f"#study-jobs-body tr[data-job='{india_small}']")  # the same prompt: compare
    compare = f"/viewer/compare?a={india}&b={india_small}"
    assert second.locator("a.compare-link").get_attribute("href") == compare
    assert "No fork yet" in page.locator("#forks-body").text_content()

    # The worker builds the India tree (the seed's, each expanded node with its candidates' entropy); the
    # page follows, and its forks appear.
    nodes = tree_nodes(json.loads(SEED_TREE.read_text(encoding="utf-8")))
    for node in nodes:
        if node.candidates:
            node.entropy = -sum(c.prob * math.log(c.prob) for c in node.candidates if c.prob > 0)
    service.start(india)
    service.grow(india, nodes, {})
    service.finish(india)
    service.start(france)
    wait_until(lambda: page.locator("#study-total").text_content() == "1 of 4 jobs ended", timeout=10,
               message="the study's progress")
    assert "174 nodes" in page.locator("#study-counts").text_content()
    expected = api_forks(service, study["id"], "entropy")
    assert expected, "the seed tree has forks"
    wait_until(lambda: fork_rows(page) == [(f["job_id"], str(f["node_id"])) for f in expected], timeout=10,
               message="the forks, ranked by entropy")
    top, shown = expected[0], page.locator("#forks-body tr[data-job]").first
    assert shown.locator("td").first.text_content() == f"{top['entropy']:.3f}"
    assert visible_ws(top["path_text"]).replace("·", " ") in shown.text_content().replace("·", " ")
    assert shown.locator("a", has_text="Tree").get_attribute("href") == f"/viewer/tree?job={top['job_id']}"
    screenshot(page, "study-page")

    page.select_option("#fork-by", "branches")
    by_branches = [(f["job_id"], str(f["node_id"])) for f in api_forks(service, study["id"], "branches")]
    wait_until(lambda: fork_rows(page) == by_branches, message="the forks, ranked by branches")
    page.select_option("#fork-limit", "10")
    wait_until(lambda: len(fork_rows(page)) == min(10, len(by_branches)), message="the top 10")

    with page.expect_download() as got:
        page.click("#download-csv")
    table = pd.read_csv(io.BytesIO(read_download(got.value)))
    assert list(table.columns[:3]) == ["job_id", "prompt", "model"]
    assert len(table) == 174 and set(table["job_id"]) == {india}

    page.click("#cancel-study")
    wait_until(lambda: page.locator("#study-total").text_content() == "4 of 4 jobs ended",
               message="the study cancelled")
    assert page.locator("#cancel-study").is_hidden()
    statuses = service.client.get(f"/v1/studies/{study['id']}").json()["progress"]["by_status"]
    assert (statuses["succeeded"], statuses["cancelled"]) == (1, 3)
    assert page.log.problems() == []

    # The job list names each job's study, with a link to its page.
    goto(page, f"{service.url}/")
    tag = page.locator(f"#jobs-body tr[data-job='{india}'] .study-tag a")
    tag.wait_for()
    assert tag.text_content() == "capitals"
    assert tag.get_attribute("href") == f"/viewer/study?id={study['id']}"
    assert page.log.problems() == []


def test_a_wrong_or_unknown_study_says_so(browser_page, study_service) -> None:
    page = browser_page
    goto(page, f"{study_service.url}/viewer/study?id=nonsense", state="body[data-state=error]")
    assert "Not a study id" in page.locator("#study-message").text_content()
    goto(page, f"{study_service.url}/viewer/study?id={uuid.uuid4()}", state="body[data-state=error]")
    assert "not found" in page.locator("#study-message").text_content()
    assert page.locator("#study-message a", has_text="job list").get_attribute("href") == "/"
