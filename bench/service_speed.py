"""The distributed service against the CLI: one worker's time on the CLI's tree, and how node throughput
grows from one worker process to two on a big job.

Everything is real: `tokentree worker` processes (Celery, solo pool) on a Redis broker, a fresh Postgres
database, jobs committed and sent the way the API does. A job's time is its `finished_at -
started_at` as the database recorded it (the worker loaded its model at start, as a deployed worker
has). The CLI's time is the expansion time it reports (its model loading excluded likewise).

    python bench/service_speed.py [--model demo] [--repeats 3] [--big-nodes 20000]
                                  [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]
                                  [--redis redis://127.0.0.1:6379/13]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from celery import Celery

from bench.common import CLI, ROOT, cli_env
from bench.postgres import fresh_database
from bench.tiny_models import make_tiny_model
from bench.trees import assert_same_tree
from tokentree.engine.params import TreeParams
from tokentree.models import jobs
from tokentree.models.db import make_engine, make_session_factory
from tokentree.models.node_reads import tree_json

# The engine bench's wide tree (bench/engine_speed.py): a low threshold the queue barely raises.
SAME_TREE = TreeParams(
    min_branch_threshold=0.05,
    max_branch_threshold=0.3,
    soft_queue_limit=1000,
    max_completed_paths=100_000,
    max_depth=40,
    max_nodes=3000,
)
PROMPT = "Once upon a time"
LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "warning")  # the workers' (info: a line per unit)


class Service:
    """A database, a broker, and worker processes on them."""

    def __init__(self, database_url: str, redis_url: str, model: str, logs: Path, units: int | None = None
                 ) -> None:
        self.database_url, self.redis_url, self.model, self.logs = database_url, redis_url, model, logs
        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)
        self.redis = redis.Redis.from_url(redis_url)
        self.celery = Celery(broker=redis_url, set_as_current=False)
        self.env = cli_env(
            TOKENTREE_DATABASE_URL=database_url,
            TOKENTREE_REDIS_URL=redis_url,
            TOKENTREE_MODELS=f"bench={model}",
            HF_HUB_OFFLINE="1",
        )
        if units is not None:
            self.env["TOKENTREE_WORKER_UNITS"] = str(units)

    @contextmanager
    def workers(self, count: int, threads: int) -> Iterator[list[str]]:
        """`count` worker processes of `threads` torch threads each, ready (model loaded) when yielded."""
        names = [f"w{i + 1}-t{threads}" for i in range(count)]
        processes = []
        for name in names:
            log = (self.logs / f"{name}.log").open("ab")
            processes.append(
                subprocess.Popen(
                    [*CLI, "worker", "--name", name, "--threads", str(threads), "--loglevel", LOG_LEVEL],
                    env=self.env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            deadline = time.monotonic() + 300
            while not all(self.redis.zscore("tokentree:model:bench:idle", n) is not None for n in names):
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"workers did not start; see {self.logs}")
                time.sleep(0.2)
            yield names
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(120)

    def run_job(self, params: TreeParams) -> dict[str, Any]:
        """Commit a tree job and send its task as the API does; wait for it; its row and tree."""
        with self.sessions() as session:
            job = jobs.create_job(
                session, kind="tree", prompt=PROMPT, model="bench", parameters=params.to_dict()
            )
        before = cpu_seconds()
        self.celery.send_task("tokentree.run_job", args=[str(job.id)], queue="tokentree.model.bench")
        while True:
            time.sleep(0.05)
            with self.sessions() as session:
                row = jobs.get_job(session, job.id)
                assert row is not None
                if row.status in ("succeeded", "failed", "cancelled"):
                    assert row.status == "succeeded", row.error
                    after = cpu_seconds()
                    assert row.started_at is not None and row.finished_at is not None
                    seconds = (row.finished_at - row.started_at).total_seconds()
                    document = tree_json(session, row)
                    return {
                        "seconds": seconds,
                        "nodes": row.node_count,
                        "tree": json.loads(document or "{}"),
                        "workers": _expanded_by(session, str(job.id)),
                        "cpu": {name: after[name] - before[name] for name in after},
                    }

    def run_many(self, work: list[tuple[str, TreeParams]], clients: int) -> dict[str, Any]:
        """Submit every (prompt, parameters) job at once from `clients` threads, as the API does (row
        committed, then its task sent); wait for all. Their rows' times and a few stored trees."""
        from concurrent.futures import ThreadPoolExecutor

        def submit(item: tuple[str, TreeParams]) -> str:
            prompt, params = item
            with self.sessions() as session:
                job = jobs.create_job(session, kind="tree", prompt=prompt, model="bench",
                                      parameters=params.to_dict())
            self.celery.send_task("tokentree.run_job", args=[str(job.id)], queue="tokentree.model.bench")
            return str(job.id)

        started = time.monotonic()
        before = cpu_seconds()
        with ThreadPoolExecutor(clients) as pool:
            ids = list(pool.map(submit, work))
        from sqlalchemy import func, select

        from tokentree.models.schema import Job

        keys = [jobs.as_job_id(i) for i in ids]
        while True:  # one light query a poll: the bench must not take the CPU it measures
            time.sleep(0.05)
            with self.sessions() as session:
                ended = session.scalar(select(func.count()).select_from(Job).where(
                    Job.id.in_(keys), Job.status.in_(("succeeded", "failed", "cancelled"))))
            if ended == len(ids):
                break
        wall = time.monotonic() - started
        after = cpu_seconds()
        with self.sessions() as session:
            rows = [jobs.get_job(session, job_id) for job_id in ids]
        assert all(r is not None and r.status == "succeeded" for r in rows), [r.error for r in rows if r]
        with self.sessions() as session:
            trees = {i: json.loads(tree_json(session, jobs.get_job(session, job_id)) or "{}")  # type: ignore[arg-type]
                     for i, job_id in enumerate(ids) if i % 17 == 0}
        return {"wall": wall, "nodes": sum(r.node_count for r in rows if r), "trees": trees,
                "cpu": {name: after[name] - before[name] for name in after if name != "wall"}}

    def close(self) -> None:
        self.celery.close()
        self.redis.close()
        self.engine.dispose()


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[str, float]:
    """CPU time used so far: by the machine (all cores, busy), by Postgres' processes, and by worker
    processes (Celery, and their node writers). Differences over a job say where its CPU went."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    used = {"wall": time.monotonic(), "machine": (sum(fields) - fields[3] - fields[4]) / TICKS,
            "postgres": 0.0, "workers": 0.0}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                parts = stat.read().rsplit(")", 1)
            name = parts[0].split("(", 1)[1]
            seconds = sum(int(x) for x in parts[1].split()[11:13]) / TICKS  # utime, stime
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if name == "postgres":
            used["postgres"] += seconds
        elif (b"celery" in command and b"worker" in command) or b"multiprocessing.spawn" in command:
            used["workers"] += seconds  # a worker, or its node-writer process
    return used


def _expanded_by(session: Any, job_id: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from tokentree.models.schema import NodeRow

    rows = session.execute(
        select(NodeRow.expanded_by, func.count())
        .where(NodeRow.job_id == jobs.as_job_id(job_id), NodeRow.expanded_by.is_not(None))
        .group_by(NodeRow.expanded_by)
    )
    return {name: count for name, count in rows}


def cli_tree(
    model: str, params: TreeParams, out: Path, threads: int, passive: bool
) -> tuple[float, dict[str, Any]]:
    args = [*CLI, "tree", PROMPT, "--model", model, "-q", "-o", str(out)]
    for name, value in params.to_dict().items():
        args += ["--" + name.replace("_", "-"), str(value)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}  # torch's thread count
    if passive:  # the workers' OpenMP wait policy (workers/__init__.py)
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, env=env)
    tree = json.loads(out.read_text())
    return float(tree["metadata"]["stats"]["seconds"]), tree


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over rounds."""
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def many_jobs(service: Service, model: str, repeats: int, clients: int, max_depth: int | None) -> None:
    """The seed's 100 jobs (bench/workloads.py) submitted at once: jobs/s through one worker and two
    (one torch thread each), round after round; a sample of stored trees checked against the CLI's.
    `max_depth` caps the jobs' depth (a random model's flat distributions grow 1,000-node chains)."""
    from bench.workloads import seed_workload
    from tokentree.engine.analysis import build_tree
    from tokentree.engine.loading import ModelSpec, load_model

    work = seed_workload()
    if max_depth is not None:
        work = [(prompt, dataclasses.replace(params, max_depth=max_depth)) for prompt, params in work]
    lm = load_model(ModelSpec(name=model))
    rates: dict[int, list[float]] = {}
    cpu: dict[int, list[dict[str, float]]] = {}
    checked = 0
    for _ in range(repeats):
        for count in (1, 2):
            with service.workers(count, threads=1):
                run = service.run_many(work, clients)
            rates.setdefault(count, []).append(len(work) / run["wall"])
            cpu.setdefault(count, []).append(run["cpu"])
            for index, tree in run["trees"].items():
                prompt, params = work[index]
                assert_same_tree(tree, json.loads(build_tree(lm, prompt, params).json_text()))
                checked += 1
    one = statistics.median(rates[1])
    print(f"| setup | jobs | median jobs/s | vs 1 worker | CPU s: workers, Postgres, machine |"
          f" (all {repeats} rounds: {rates})")
    print("| --- | --- | --- | --- | --- |")
    for count, values in rates.items():
        rate = statistics.median(values)
        use = medians(cpu[count])
        print(f"| {count} worker(s), 1 thread each | {len(work)} seed-default jobs, {clients} clients | "
              f"{rate:.1f} | **{rate / one:.2f}x** | {use['workers']:.1f}, {use['postgres']:.1f}, "
              f"{use['machine']:.1f} |")
    print(f"\n{checked} stored trees checked equal to `tokentree tree`'s\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a model source, as `--model` of `tokentree tree`")
    parser.add_argument(
        "--random-model",
        metavar="WIDTHxLAYERS",
        help="instead, a random Gemma-2 of this size with the demo model's tokenizer (e.g. 384x8: about "
        "4x the demo model's compute per node), to see the service's overhead against a heavier model",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-nodes", type=int, default=12_000, help="nodes of the throughput job")
    parser.add_argument("--parts", nargs="*", default=["same", "big", "many"],
                        help="same: one worker vs the CLI; big: one big job on 1 and 2 workers; "
                             "many: the seed's 100 jobs on 1 and 2 workers")
    parser.add_argument("--clients", type=int, default=4, help="threads submitting the 100 jobs")
    parser.add_argument("--many-max-depth", type=int, help="cap the 100 jobs' max_depth (random models)")
    parser.add_argument("--units", type=int, help="units a worker runs at once (default: the worker's)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/13", help="a Redis database to use (it is flushed)"
    )
    args = parser.parse_args()
    # Wider still (the demo model's whole tree has 14,000+ nodes), cut before it narrows at the end.
    big = TreeParams(
        min_branch_threshold=0.03,
        max_branch_threshold=0.3,
        soft_queue_limit=1000,
        max_completed_paths=1_000_000,
        max_depth=60,
        max_nodes=args.big_nodes,
    )

    redis.Redis.from_url(args.redis).flushdb()
    logs = Path(tempfile.mkdtemp(prefix="tokentree-bench-"))
    if args.random_model:
        width, layers = (int(x) for x in args.random_model.split("x"))
        folder = logs / f"random-gemma2-{args.random_model}"
        args.model = str(make_tiny_model(folder, "gemma2", width=width, layers=layers))
    cores = os.cpu_count() or 1
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {cores} CPUs; model {args.model}; "
        f"load average {os.getloadavg()}; worker logs in {logs}\n"
    )
    with fresh_database(f"tokentree_service_bench_{os.getpid()}", args.postgres) as url:
        service = Service(url, args.redis, args.model, logs, args.units)
        try:
            if "many" in args.parts:
                many_jobs(service, args.model, args.repeats, args.clients, args.many_max_depth)
            # 1. One worker against the CLI, on the same tree, with the same torch threads.
            if "same" in args.parts:
                print("| setup | job | median time | vs the CLI |")
                print("| --- | --- | --- | --- |")
            for threads in sorted({1, cores}) if "same" in args.parts else []:
                cli_times: list[float] = []
                reference: dict[str, Any] = {}
                worker_times: list[float] = []
                with service.workers(1, threads=threads):
                    for _ in range(args.repeats):  # alternately, so both see the same machine
                        # The CLI's best: as users run it, or with the workers' OpenMP policy.
                        out = logs / "cli-tree.json"
                        seconds, reference = cli_tree(args.model, SAME_TREE, out, threads, passive=False)
                        passive_s, _ = cli_tree(args.model, SAME_TREE, out, threads, passive=True)
                        cli_times.append(min(seconds, passive_s))
                        run = service.run_job(SAME_TREE)
                        assert_same_tree(run["tree"], reference)  # the CLI's tree, or no number at all
                        worker_times.append(run["seconds"])
                cli_s, worker_s = statistics.median(cli_times), statistics.median(worker_times)
                nodes = reference["metadata"]["stats"]["nodes"]
                print(f"| `tokentree tree`, {threads} thread(s) | {nodes:,} nodes | {cli_s:.2f} s | 1.00 |")
                print(
                    f"| 1 worker, {threads} thread(s), the same tree | {nodes:,} nodes | "
                    f"{worker_s:.2f} s | **{worker_s / cli_s:.2f}x** |"
                )

            # 2. Node throughput on a big job: one worker process, then two, one thread each.
            # Round after round, so that a busier spell of the machine hits every setup alike.
            rates: dict[str, list[float]] = {}
            cpu: dict[str, list[dict[str, float]]] = {}
            shares: dict[str, dict[str, int]] = {}
            setups = [("1 worker, 1 thread", 1, 1), ("2 workers, 1 thread each", 2, 1)]
            if cores > 1:
                setups.append((f"1 worker, {cores} threads", 1, cores))
            for _ in range(args.repeats if "big" in args.parts else 0):
                for label, count, threads in setups:
                    with service.workers(count, threads):
                        run = service.run_job(big)
                    rates.setdefault(label, []).append(run["nodes"] / run["seconds"])
                    per_node = {k: v / run["nodes"] * 1e6 for k, v in run["cpu"].items()}
                    per_node["cores"] = run["cpu"]["machine"] / run["cpu"]["wall"]
                    cpu.setdefault(label, []).append(per_node)
                    shares[label] = run["workers"]
            if "big" not in args.parts:
                return
            one = statistics.median(rates["1 worker, 1 thread"])
            print("\n| setup | job | median nodes/s | vs 1 worker | cores busy | "
                  "CPU per node: workers, Postgres, machine |")
            print("| --- | --- | --- | --- | --- | --- |")
            for label, values in rates.items():
                rate = statistics.median(values)
                use = medians(cpu[label])
                print(f"| {label} | {args.big_nodes:,} nodes | {rate:,.0f} | **{rate / one:.2f}x** | "
                      f"{use['cores']:.2f} of {cores} | {use['workers']:.0f} us, {use['postgres']:.0f} us, "
                      f"{use['machine']:.0f} us |")
            print(f"\nexpanded per worker (last run): {shares}")
            print(f"load average at the end (1, 5, 15 min): {os.getloadavg()}")
        finally:
            service.close()


if __name__ == "__main__":
    main()
