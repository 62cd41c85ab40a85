"""`tokentree.Client` against the real embedded service (SQLite, the in-process worker, the API over
HTTP): submit, wait on the event stream (or by polling when a stream is refused), read trees, paths and
records, cancel, and the API's refusals as `APIError`s with its own message."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

import tokentree
from tests.python_api.conftest import BIG, PROMPT, SMALL
from tests.utils.servers import LiveAPI


@pytest.fixture
def client(service: LiveAPI) -> Iterator[tokentree.Client]:
    with tokentree.Client(service.url) as client:
        yield client


def record_requests(client: tokentree.Client) -> list[tuple[str, str]]:
    """Each request the client sends from now on, as (method, path)."""
    sent: list[tuple[str, str]] = []
    client._http.event_hooks["request"].append(lambda r: sent.append((r.method, r.url.path)))
    return sent


def by_token_path(tree: tokentree.Tree) -> dict[tuple[int, ...], tokentree.Node]:
    found: dict[tuple[int, ...], tokentree.Node] = {}
    stack: list[tuple[tuple[int, ...], int]] = [((), 0)]
    while stack:
        path, position = stack.pop()
        node = tree.nodes[position]
        found[path] = node
        stack.extend(((*path, tree.nodes[c].token_id or 0), c) for c in node.children)
    return found


def assert_same_structure(served: tokentree.Tree, built: tokentree.Tree) -> None:
    mine, theirs = by_token_path(served), by_token_path(built)
    assert mine.keys() == theirs.keys()
    for path, node in theirs.items():
        other = mine[path]
        assert (other.text, other.depth, other.finish_reason, other.queue_depth) == \
               (node.text, node.depth, node.finish_reason, node.queue_depth), path
        assert math.isclose(other.cumulative_prob, node.cumulative_prob, rel_tol=1e-4, abs_tol=1e-7), path


def started(client: tokentree.Client, job: tokentree.Job) -> tokentree.Job:
    """The job once it has written nodes."""
    deadline = time.monotonic() + 120
    while (current := client.job(job)).progress.nodes == 0:
        assert time.monotonic() < deadline and not current.done, current
        time.sleep(0.1)
    return current


def cancel_elsewhere(url: str, job: tokentree.Job) -> None:
    with tokentree.Client(url) as other:
        other.cancel(job)


def test_submit_wait_and_read_the_tree(service: LiveAPI, client: tokentree.Client) -> None:
    sent = record_requests(client)
    job = client.submit(PROMPT, **SMALL)
    assert job.kind == "tree" and job.model == "demo" and job.parameters["max_nodes"] == SMALL["max_nodes"]
    done = client.wait(job, timeout=300, progress=False)
    assert done.status == "succeeded" and done.done and done.finished_at is not None, done
    assert ("GET", f"/v1/jobs/{job.id}/events") in sent  # followed the stream, not polling
    assert sent.count(("GET", f"/v1/jobs/{job.id}")) == 1  # once, before the stream

    served = client.tree(job)
    assert len(served) == done.progress.nodes
    built = tokentree.build_tree(PROMPT, progress=False, **SMALL)
    assert_same_structure(served, built)
    for key in ("prompt", "parameters", "chat", "prefix", "model"):
        assert served.metadata[key] == built.metadata[key]
    assert served.metadata["job"] == {"id": job.id, "status": "succeeded"}
    assert {p.text for p in served.paths()} == {p.text for p in built.paths()}

    # the paths the service ranks are the tree's own
    assert client.paths(job) == served.paths()
    assert client.paths(job, limit=2) == served.paths()[:2]
    # a document read from the service writes itself back byte for byte, cut at a depth too
    raw = service.client.get(f"/v1/jobs/{job.id}/tree").text
    assert served.to_json() == raw
    cut = service.client.get(f"/v1/jobs/{job.id}/tree", params={"max_depth": 3}).text
    shallow = client.tree(job, max_depth=3)
    assert shallow.to_json() == cut and len(shallow) < len(served)
    assert "http://" not in shallow._repr_html_()


def test_an_idempotency_key_returns_the_first_job(client: tokentree.Client) -> None:
    key = str(uuid.uuid4())
    first = client.submit(PROMPT, idempotency_key=key, max_nodes=20)
    again = client.submit(PROMPT, idempotency_key=key, max_nodes=20)
    assert again.id == first.id
    with pytest.raises(tokentree.APIError) as refused:
        client.submit(PROMPT, idempotency_key=key, max_nodes=21)
    assert refused.value.status == 422 and "idempotency-key" in refused.value.message
    assert client.wait(first, timeout=120, progress=False).status == "succeeded"


def test_a_logprobs_job_gives_the_in_process_record(client: tokentree.Client) -> None:
    prompt = "The capital of France is"
    job = client.wait(client.submit(prompt, kind="logprobs", max_new_tokens=10, top_k=3), timeout=120)
    assert job.status == "succeeded", job
    record = client.logprobs(job)
    local = tokentree.logprobs(prompt, max_new_tokens=10, top_k=3)
    assert record["response"] == local["response"]
    assert [step["token"] for step in record["data"]] == [step["token"] for step in local["data"]]
    with pytest.raises(tokentree.APIError, match="not a tree job"):
        client.tree(job)


def test_cancel_keeps_the_partial_tree(client: tokentree.Client) -> None:
    job = started(client, client.submit(PROMPT, **BIG))
    cancelled = client.cancel(job)
    assert cancelled.status == "cancelled" and cancelled.done
    partial = client.tree(job)
    assert 0 < len(partial) < 14_000 and partial.metadata["job"]["status"] == "cancelled"
    assert client.cancel(job).status == "cancelled"  # cancelling again changes nothing
    client.delete(job)
    with pytest.raises(tokentree.APIError) as gone:
        client.job(job)
    assert gone.value.status == 404 and gone.value.message == f"job {job.id} not found"


def test_the_apis_refusals_carry_its_message(client: tokentree.Client) -> None:
    with pytest.raises(tokentree.APIError) as refused:
        client.submit(PROMPT, max_nodes=0)
    error = refused.value
    assert error.status == 422 and isinstance(error.detail, list)
    assert error.detail[0]["loc"] == ["body", "parameters", "max_nodes"]
    assert error.message.startswith("parameters.max_nodes: must be between 1 and")
    assert str(error) == f"HTTP 422: {error.message}"

    with pytest.raises(tokentree.APIError, match=r"model: not served here; one of demo"):
        client.submit(PROMPT, model="gpt-9")
    with pytest.raises(tokentree.APIError, match="prompt: must not be only whitespace"):
        client.submit("   ")
    with pytest.raises(tokentree.APIError, match="unknown parameter"):
        client.submit(PROMPT, max_node=10)
    finished = client.wait(client.submit(PROMPT, max_nodes=20), timeout=120, progress=False)
    with pytest.raises(tokentree.APIError) as too_late:
        client.cancel(finished)
    assert too_late.value.status == 409 and too_late.value.message == f"job {finished.id} already succeeded"
    missing = uuid.uuid4()
    with pytest.raises(tokentree.APIError, match=f"job {missing} not found"):
        client.wait(missing)


def test_wait_gives_up_after_its_timeout(client: tokentree.Client) -> None:
    job = started(client, client.submit(PROMPT, **BIG))
    try:
        began = time.monotonic()
        with pytest.raises(tokentree.JobTimeout) as late:
            client.wait(job, timeout=1.0, progress=False)
        assert time.monotonic() - began < 5
        assert late.value.job.id == job.id and late.value.job.status == "running"
        assert late.value.job.progress.nodes > 0
    finally:
        client.cancel(job)


def test_wait_polls_when_its_event_stream_is_refused(service: LiveAPI, client: tokentree.Client) -> None:
    """The service allows one stream per caller (see conftest): with one held open, a wait polls."""
    long = started(client, client.submit(PROMPT, **BIG))
    short = client.submit(PROMPT, max_nodes=50)  # queued behind the long one
    with httpx.Client(base_url=service.url, timeout=30) as other, \
            other.stream("GET", f"/v1/jobs/{long.id}/events") as held:
        lines = held.iter_lines()  # kept: a reader dropped would close its stream
        assert next(lines) == "event: progress"  # the stream is open: its slot is taken
        refused = other.get(f"/v1/jobs/{short.id}/events")
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        sent = record_requests(client)
        threading.Timer(1.0, cancel_elsewhere, (service.url, long)).start()
        done = client.wait(short, timeout=120, progress=False)
    assert done.status == "succeeded", done
    assert sent.count(("GET", f"/v1/jobs/{short.id}/events")) == 1  # refused once, then never asked again
    assert sent.count(("GET", f"/v1/jobs/{short.id}")) >= 2  # polled


def test_expand_grows_a_candidate_of_an_ended_job_in_place(client: tokentree.Client) -> None:
    job = client.wait(client.submit(PROMPT, max_nodes=60), timeout=300, progress=False)
    before = client.tree(job)
    # An expanded node with a recorded candidate the rule did not follow.
    node, candidate = next((n, c) for n in before.nodes if n.is_expanded
                           for c in n.candidates
                           if c.token_id not in {before.nodes[k].token_id for k in n.children})
    grown = client.expand(job, node.id, candidate.token_id, max_nodes=20)
    assert grown.status in ("queued", "running")
    assert client.wait(grown, timeout=300, progress=False).status == "succeeded"
    after = client.tree(job)
    assert len(before) < len(after) <= len(before) + 20
    parent = next(n for n in after.nodes if n.id == node.id)
    (child,) = (after.nodes[k] for k in parent.children if after.nodes[k].token_id == candidate.token_id)
    # Absolute probabilities: the parent's cumulative times the child's own (`prob` prints rounded).
    assert math.isclose(child.cumulative_prob, parent.cumulative_prob * math.exp(child.logprob), rel_tol=1e-6)
    (growth,) = after.metadata["growths"]
    assert (growth["node_id"], growth["token_id"]) == (node.id, candidate.token_id)
    with pytest.raises(tokentree.APIError) as refused:
        client.expand(job, node.id, candidate.token_id)  # a child now, not an unexplored candidate
    assert refused.value.status == 422 and "token_id" in str(refused.value)
