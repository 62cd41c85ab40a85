"""Storage speed: nodes written per second through the workers' write path, and the time to serve a
10,000-node tree over HTTP.

Writes replay a synthetic tree the way a worker does, a batch of popped nodes per transaction
(`models.node_writes.write_step`: expansions, finishes and their children). Reads time
GET /v1/jobs/{id}/tree against uvicorn on a loopback port, the whole response received. Postgres is a
fresh database created (and dropped) on the server given; SQLite (the embedded mode) a temporary file.

    python bench/storage_speed.py [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]
                                  [--nodes 100000] [--tree-nodes 10000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from sqlalchemy.orm import Session

from bench.common import free_port
from bench.factories import RecordingDispatcher, insert_tree, make_job, synthetic_tree
from bench.postgres import fresh_database
from tokentree.api.app import create_app
from tokentree.engine.tree import Node as TreeNode
from tokentree.engine.tree import candidates_json
from tokentree.migrations import upgrade_database
from tokentree.models import jobs
from tokentree.models.db import make_engine, make_session_factory
from tokentree.models.node_writes import Expansion, Finish, Limits, NewChild, Pop, start_tree, write_step
from tokentree.models.settings import Settings

WORKER_BATCH = 256  # nodes popped per step: the workers' default max_batch


def replay_writes(session: Session, nodes: list[TreeNode]) -> tuple[int, float]:
    """Write `nodes` as a worker would, level by level in batches; (nodes written, seconds spent in
    the writes alone: building the steps is the worker's time, not the database's)."""
    job = make_job(session, parameters={"max_nodes": len(nodes)})
    limits = Limits(max_nodes=len(nodes), max_completed_paths=len(nodes))
    started = time.perf_counter()
    start = start_tree(session, job.id, nodes[0].text)
    assert start is not None and start.root is not None
    db_ids = {0: start.root.id}
    seconds = time.perf_counter() - started
    queue = [0]
    while queue:
        batch, queue = queue[:WORKER_BATCH], queue[WORKER_BATCH:]
        popped: list[int] = []
        pops: list[Pop] = []
        for node_id in batch:
            node = nodes[node_id]
            if node.is_finished:
                pops.append(Finish(node_id=db_ids[node_id], reason=node.finish_reason or "stop"))
            elif node.is_expanded:
                children = [nodes[c] for c in node.children]
                pops.append(
                    Expansion(
                        node_id=db_ids[node_id],
                        depth=node.depth,
                        candidates_json=candidates_json(node.candidates),
                        threshold=node.threshold or 0.0,
                        queue_depth=node.queue_depth or 0,
                        entropy=node.entropy,
                        children=[
                            NewChild(
                                token_id=c.token_id or 0,
                                text=c.text,
                                prob=c.prob,
                                logprob=c.logprob,
                                cumulative_prob=c.cumulative_prob,
                            )
                            for c in children
                        ],
                    )
                )
            else:
                continue  # left open: the tree's size limit came first
            popped.append(node_id)
        started = time.perf_counter()
        written = write_step(session, job.id, pops, limits, "bench")
        seconds += time.perf_counter() - started
        for node_id, child_ids in zip(popped, written.child_ids, strict=True):
            for engine_id, db_id in zip(nodes[node_id].children, child_ids, strict=True):
                db_ids[engine_id] = db_id
                queue.append(engine_id)
    jobs.finish_job(session, job.id, "succeeded")
    return len(db_ids), seconds


@contextmanager
def api_process(url: str, cache: bool) -> Iterator[str]:
    """The API on `url` in a process of its own (a client in the same process would share its GIL)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", url, "--port", str(port), *([] if cache else ["--no-cache"])]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/healthz").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the API did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(30)


def serve(url: str, port: int, cache: bool) -> None:
    """The API alone on `url` (jobs are never submitted here: the dispatcher only records)."""
    settings = Settings(database_url=url, redis_url=None, tree_cache_bytes=256 << 20 if cache else 0)
    app = create_app(settings, dispatcher=RecordingDispatcher())
    gc.freeze()  # as `tokentree serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def store_tree(url: str, nodes: int) -> str:
    """A finished tree job of `nodes` nodes; its id."""
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        job = make_job(session, parameters={"max_nodes": nodes})
        insert_tree(session, job.id, synthetic_tree(nodes, seed=1))
        jobs.finish_job(session, job.id, "succeeded")
    engine.dispose()
    return str(job.id)


def time_tree(url: str, job_id: str, repeats: int, cache: bool) -> tuple[float, float, int]:
    """(median seconds, best seconds, response bytes) of GET /tree. Without the cache every request
    reads and writes the whole tree; with it, the first did and the timed ones are served rendered."""
    times = []
    with api_process(url, cache) as base, httpx.Client(base_url=base, timeout=60) as client:
        size = len(client.get(f"/v1/jobs/{job_id}/tree").content)  # warm up
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(f"/v1/jobs/{job_id}/tree")
            response.raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), size


def measure(label: str, url: str, args: argparse.Namespace) -> list[str]:
    upgrade_database(url)  # the SQLite file is new; a fresh Postgres database is already at head
    engine = make_engine(url)
    tree = synthetic_tree(args.nodes, seed=2)
    rates = []
    with make_session_factory(engine)() as session:
        for _ in range(args.write_repeats):
            written, seconds = replay_writes(session, tree)
            rates.append(written / seconds)
    engine.dispose()
    job_id = store_tree(url, args.tree_nodes)
    lines = [
        f"| {label} | write {written:,} nodes, {WORKER_BATCH} pops per transaction | "
        f"**{statistics.median(rates):,.0f} nodes/s** (best {max(rates):,.0f}) |"
    ]
    for cache, how in ((False, "read and rendered"), (True, "finished, kept rendered")):
        median, best, size = time_tree(url, job_id, args.repeats, cache)
        lines.append(
            f"| {label} | GET /tree, {args.tree_nodes:,} nodes ({size / 1e6:.1f} MB), {how} | "
            f"**{median * 1000:.0f} ms** median (best {best * 1000:.0f} ms) |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="a Postgres server (a database is created on it and dropped); '' to skip",
    )
    parser.add_argument("--nodes", type=int, default=100_000, help="nodes per write run")
    parser.add_argument("--write-repeats", type=int, default=3)
    parser.add_argument("--tree-nodes", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15, help="GET /tree requests timed")
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, cache=not args.no_cache)
        return

    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| database | what | result |")
    print("| --- | --- | --- |")
    if args.postgres:
        with fresh_database(f"tokentree_bench_{os.getpid()}", args.postgres) as url:
            print("\n".join(measure("Postgres", url, args)), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        print("\n".join(measure("SQLite (embedded)", f"sqlite+pysqlite:///{folder}/bench.sqlite3", args)))


if __name__ == "__main__":
    main()
