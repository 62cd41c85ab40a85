"""How long a submission takes when many arrive at once: 200 concurrent `POST /v1/jobs` to a real
`tokentree serve` (API only, Postgres and Redis), first with no worker running (the jobs wait in the
queue), then while worker processes build the 200 jobs of the first round on the same machine.

Prints the p50, p99 and max latency of each round, and the submissions per second end to end. On a
machine of two cores the second round shares them with the workers' model threads: the figure an
operator who runs workers next to the API should expect.

    python bench/submit_latency.py [--submissions 200] [--workers 2]
                                   [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]
                                   [--redis redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import redis

from bench.common import CLI, ROOT, cli_env, free_port
from bench.postgres import fresh_database
from tokentree.models.queues import model_queue

REQUEST = {"prompt": "The capital of India is", "parameters": {"max_nodes": 50}}


async def one_round(url: str, submissions: int) -> tuple[list[float], float]:
    """`submissions` POSTs at once; each one's latency (seconds), and the round's wall time."""
    limits = httpx.Limits(max_connections=submissions + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def submit() -> float:
            started = time.perf_counter()
            response = await client.post("/v1/jobs", json=REQUEST)
            response.raise_for_status()
            return time.perf_counter() - started

        started = time.perf_counter()
        latencies = await asyncio.gather(*(submit() for _ in range(submissions)))
        return list(latencies), time.perf_counter() - started


def report(name: str, latencies: list[float], wall: float) -> None:
    ordered = sorted(latencies)
    p99 = ordered[max(0, int(0.99 * len(ordered)) - 1)]
    print(f"{name:<28} p50 {statistics.median(ordered) * 1000:6.0f} ms   p99 {p99 * 1000:6.0f} ms   "
          f"max {ordered[-1] * 1000:6.0f} ms   {len(ordered) / wall:5.0f} submissions/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}", flush=True)
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    logs = Path(tempfile.mkdtemp(prefix="tokentree-submit-"))
    with fresh_database("tokentree_bench_submit", args.postgres) as database_url:
        env = cli_env(TOKENTREE_DATABASE_URL=database_url, TOKENTREE_REDIS_URL=args.redis,
                      TOKENTREE_MODELS="demo", TOKENTREE_RATE_LIMIT_PER_MINUTE="0",
                      TOKENTREE_MAX_ACTIVE_JOBS_PER_KEY="0",
                      TOKENTREE_LOG_LEVEL="WARNING", HF_HUB_OFFLINE="1")
        port = free_port()
        processes = [subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, cwd=ROOT,
                                      stdout=(logs / "serve.log").open("wb"), stderr=subprocess.STDOUT)]
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"tokentree serve did not answer; see {logs}")
                time.sleep(0.25)
            latencies, wall = asyncio.run(one_round(url, args.submissions))
            report("no worker running", latencies, wall)
            for i in range(args.workers):
                processes.append(subprocess.Popen(
                    [*CLI, "worker", "--name", f"bench-w{i + 1}", "--loglevel", "warning"], env=env, cwd=ROOT,
                    stdout=(logs / f"worker-{i + 1}.log").open("wb"), stderr=subprocess.STDOUT))
            # The workers are busy once the first round's jobs start to run.
            while client.llen(model_queue("demo")) >= args.submissions and time.monotonic() < deadline + 240:
                time.sleep(0.2)
            latencies, wall = asyncio.run(one_round(url, args.submissions))
            report(f"{args.workers} workers building", latencies, wall)
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
    client.flushdb()
    client.close()


if __name__ == "__main__":
    main()
