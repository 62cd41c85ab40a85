"""The service the browser tests run against: the real API (`api.app.create_app`) in its embedded mode
(SQLite in a temporary folder), whose jobs are submitted through the API like any client's, and whose
worker side a test plays through the repository functions (`models.jobs`, and node rows as
`bench.factories` writes them): a job runs, gains nodes level by level, and ends. Nothing else runs
them: a `RecordingDispatcher` takes the submissions. Files for `?file=URL` come from a second loopback
origin, as a user's would.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from bench.factories import RecordingDispatcher, node_rows
from tokentree.engine.tree import Candidate, FinishReason
from tokentree.engine.tree import Node as TreeNode
from tokentree.models import jobs
from tokentree.models.schema import NodeRow

WORKER = "browser-tests"


# --------------------------------------------------------------------------- trees as the worker writes them


def tree_nodes(doc: dict) -> list[TreeNode]:
    """A tree document (the seed's layout, or the API's) as engine nodes, breadth first (so that parents
    come first and each parent's children get ids in their order). A finished leaf without a reason is
    a completed path (the seed files predate `finish_reason`), which the engine records as "stop"."""
    nodes: list[TreeNode] = []
    queue: deque[tuple[dict, TreeNode | None]] = deque([(doc["tree"], None)])
    while queue:
        raw, parent = queue.popleft()
        prob = 1.0 if parent is None else float(raw["prob"])
        finished = bool(raw.get("is_finished"))
        parent_cumulative = 1.0 if parent is None else parent.cumulative_prob
        reason = raw.get("finish_reason") or ("stop" if finished and not raw["children"] else None)
        node = TreeNode(
            id=len(nodes), parent_id=None if parent is None else parent.id, token_id=raw.get("token_id"),
            text=raw["text"], depth=0 if parent is None else parent.depth + 1, prob=prob,
            logprob=raw["logprob"] if raw.get("logprob") is not None else math.log(prob),
            cumulative_prob=raw.get("cumulative_prob", parent_cumulative * prob),
            is_finished=finished, finish_reason=cast("FinishReason | None", reason),
            candidates=[Candidate(token_id=c["token_id"], text=c["text"], prob=c["prob"])
                        for c in raw.get("candidates") or []],
            threshold=raw.get("threshold"), queue_depth=raw.get("queue_depth"), entropy=raw.get("entropy"),
        )
        if parent is not None:
            parent.children.append(node.id)
        nodes.append(node)
        queue.extend((child, node) for child in raw["children"])
    return nodes


def write_nodes(session: Session, job_id: str, nodes: list[TreeNode], db_ids: dict[int, int]) -> None:
    """Write `nodes` (parents first; parents written earlier are in `db_ids`, engine id -> database id,
    which this extends) level by level with the job's counts, in one transaction, as a worker's step."""
    key = jobs.as_job_id(job_id)
    levels: dict[int, list[TreeNode]] = {}
    for node in nodes:
        levels.setdefault(node.depth, []).append(node)
    for depth in sorted(levels):
        level = levels[depth]
        rows = node_rows(key, level, db_ids, WORKER)
        ids = session.scalars(insert(NodeRow).returning(NodeRow.id, sort_by_parameter_order=True), rows).all()
        db_ids.update((node.id, db_id) for node, db_id in zip(level, ids, strict=True))
    jobs.add_counts(session, key, nodes=len(nodes),
                    completed_paths=sum(node.finish_reason == "stop" for node in nodes))
    session.commit()


# --------------------------------------------------------------------------- the service


@dataclass
class BrowserService:
    """The running API, its database and dispatcher, and the jobs tests refer to by name."""

    url: str
    client: httpx.Client
    session_factory: sessionmaker[Session]
    dispatcher: RecordingDispatcher
    files_dir: Path
    files_url: str
    jobs: dict[str, str] = field(default_factory=dict)

    def job(self, name: str) -> str:
        """The id of the job seeded as `name`."""
        return self.jobs[name]

    def submit(self, prompt: str, kind: str = "tree", **parameters: Any) -> str:
        """Submit a job as any client does; it stays queued until a test plays its worker."""
        body = {"prompt": prompt, "kind": kind, "parameters": parameters}
        response = self.client.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def start(self, job_id: str) -> None:
        with self.session_factory() as session:
            assert jobs.mark_running(session, job_id, WORKER)

    def grow(self, job_id: str, nodes: list[TreeNode], db_ids: dict[int, int]) -> None:
        with self.session_factory() as session:
            write_nodes(session, job_id, nodes, db_ids)

    def finish(self, job_id: str, status: str = "succeeded", error: str | None = None, **result: Any) -> None:
        with self.session_factory() as session:
            assert jobs.finish_job(session, job_id, status, error=error, result=result or None)

    def run_tree_job(self, job_id: str, doc: dict) -> None:
        """Play the worker of a submitted tree job: it runs, writes `doc`'s nodes and succeeds."""
        self.start(job_id)
        self.grow(job_id, tree_nodes(doc), {})
        self.finish(job_id)

    def add_tree_job(self, name: str, doc: dict) -> str:
        """A finished tree job holding `doc` (its prompt and parameters from the document's metadata)."""
        metadata = doc["metadata"]
        job_id = self.submit(metadata["prompt"], **metadata.get("parameters", {}))
        self.run_tree_job(job_id, doc)
        self.jobs[name] = job_id
        return job_id

    def add_logprobs_job(self, name: str, record: dict) -> str:
        """A finished log-probability job whose result is `record`."""
        job_id = self.submit(record["prompt"], kind="logprobs")
        self.start(job_id)
        self.finish(job_id, record=record)
        self.jobs[name] = job_id
        return job_id

    def add_file(self, name: str, text: str) -> str:
        """Serve `text` at a URL of the file origin; returns the URL."""
        (self.files_dir / name).write_text(text, encoding="utf-8")
        return f"{self.files_url}/{name}"

    def wait_submitted(self, count: int, timeout: float = 10.0) -> str:
        """The id of the `count`-th job submitted so far (waiting for it): what a page submitted."""
        deadline = time.monotonic() + timeout
        while len(self.dispatcher.submitted) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no job number {count} was submitted in {timeout} s")
            time.sleep(0.05)
        return self.dispatcher.submitted[count - 1][0]


@contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """`directory` over HTTP on another loopback origin, with CORS, as a user's `?file=URL` would be."""

    class Handler(SimpleHTTPRequestHandler):
        def end_headers(self) -> None:
            self.send_header("Access-Control-Allow-Origin", "*")
            super().end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
