"""`tokentree worker`: run Celery workers that expand the jobs of some models (the distributed mode).

Each worker process is a Celery worker with a thread pool: up to `TOKENTREE_WORKER_UNITS` units of work
at once, whose trees one model thread steps together, in the process that loaded the models, so no
CUDA context is ever forked. For several GPUs (or CPU cores) start one
process each: `--gpus 0,1` pins one process per device, `--processes N` starts N on the CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys

from tokentree.cli.common import Parser, load_settings
from tokentree.cli.errors import UsageError


def add_command(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register `tokentree worker` on the CLI's subcommands."""
    parser = commands.add_parser(
        "worker", help="run workers that expand the jobs of their models (needs Postgres and Redis)",
        description="Run Celery workers for the distributed mode "
                    "(TOKENTREE_DATABASE_URL, TOKENTREE_REDIS_URL).",
    )
    # Checked against the allow-list when the command runs, not as argparse choices: reading the settings
    # while the parser is built would cost every command, `tree` and `--help` too, the settings' imports.
    parser.add_argument("--model", action="append", metavar="NAME",
                        help="a model of the allow-list to serve (repeatable; default: every model)")
    parser.add_argument("--name", help="the worker's name in job progress and status, unique among live "
                        "workers (default: TOKENTREE_WORKER_NAME, else HOST-PID; processes add -1, -2...)")
    parser.add_argument("--processes", type=int, default=1,
                        help="worker processes to run, one unit of work at a time each (default 1)")
    parser.add_argument("--gpus", help="comma-separated CUDA device ids: one process per device")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads per process (default: the CPU cores shared among processes)")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                        help="the workers' log level")
    parser.add_argument("--check", action="store_true",
                        help="start nothing: exit 0 if the workers this command runs on this host are alive "
                             "(their heartbeats in Redis; a container's healthcheck), else 1")
    parser.set_defaults(handler=run_worker)


def _process_envs(args: argparse.Namespace, models: list[str]) -> list[dict[str, str]]:
    gpus = _gpu_ids(args.gpus)
    count = len(gpus) or args.processes
    # The host and this process's id by default: two `tokentree worker` on one host never share a name
    # (with one process the worker becomes this process, so the pid stays the worker's own).
    name = args.name or os.environ.get("TOKENTREE_WORKER_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    threads = args.threads or max(1, (os.cpu_count() or 1) // count)
    envs = []
    for index in range(count):
        env = dict(os.environ)
        env["TOKENTREE_WORKER_NAME"] = name if count == 1 else f"{name}-{index + 1}"
        env["TOKENTREE_WORKER_MODELS"] = ",".join(models)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see workers/__init__.py
        if not gpus:
            env["TOKENTREE_WORKER_THREADS"] = str(threads)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index]
        envs.append(env)
    return envs


def _gpu_ids(text: str | None) -> list[str]:
    if not text:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise UsageError(f"--gpus takes comma-separated CUDA device numbers (like 0,1), got {text!r}")
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus lists a device twice: {text!r}")
    return gpus


def _check_gpus(gpus: list[str]) -> None:
    """Refuse --gpus on a machine where torch sees no CUDA device (or fewer than asked for)."""
    if not gpus:
        return
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise UsageError(f"--gpus {','.join(gpus)}: no CUDA GPU is available here "
                         f"(torch {torch.__version__}, {build}); run without --gpus to use the CPU")
    count = torch.cuda.device_count()
    missing = [g for g in gpus if int(g) >= count]
    if missing:
        raise UsageError(f"--gpus {','.join(gpus)}: this machine has {count} CUDA device(s), numbered 0 to "
                         f"{count - 1}; there is no {missing[0]}")


def _check_names_free(redis_url: str, names: list[str]) -> None:
    """Refuse a name a live worker already has (its heartbeat key is in Redis). The worker process claims
    its name itself when it starts (workers/tasks.py); this says so before anything loads."""
    import redis

    from tokentree.models.worker_registry import holder_of, is_stale, name_taken

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        for name in names:
            holder = holder_of(client, name)
            if holder is not None and not is_stale(holder):
                raise UsageError(name_taken(holder))
    except redis.RedisError as exc:
        raise UsageError(f"cannot reach Redis at {redis_url.split('@')[-1]}: {exc}") from None
    finally:
        client.close()


def check_alive(redis_url: str, name: str | None, count: int) -> int:
    """`tokentree worker --check`: 0 when `count` workers of this host have a live heartbeat (those named
    NAME, or NAME-1..NAME-count, when a name is given), else 1; one line either way."""
    import redis

    from tokentree.models.worker_registry import live_workers

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        workers = [w for w in live_workers(client) if w.host == socket.gethostname()]
    except redis.RedisError as exc:
        print(f"tokentree: error: cannot reach Redis at {redis_url.split('@')[-1]}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if name is not None:
        wanted = {name} if count == 1 else {f"{name}-{index + 1}" for index in range(count)}
        workers = [w for w in workers if w.name in wanted]
    alive = ", ".join(f"{w.name} ({w.state})" for w in workers)
    if len(workers) < count:
        print(f"tokentree: error: {len(workers)} of {count} worker(s) alive on {socket.gethostname()}"
              + (f": {alive}" if alive else ""), file=sys.stderr)
        return 1
    print(f"{len(workers)} worker(s) alive on {socket.gethostname()}: {alive}")
    return 0


def celery_argv(env: dict[str, str], models: list[str], loglevel: str) -> list[str]:
    from tokentree.models.queues import model_queue, worker_queue
    from tokentree.workers.settings import WorkerSettings

    return [
        sys.executable, "-m", "celery", "-A", "tokentree.workers.app:app", "worker",
        "--pool=threads", f"--concurrency={WorkerSettings().units}", "--prefetch-multiplier=1",
        "-Q", ",".join([*(model_queue(m) for m in models), worker_queue(env["TOKENTREE_WORKER_NAME"])]),
        "-n", f"{env['TOKENTREE_WORKER_NAME']}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-l", loglevel,
    ]


def run_worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    unknown = [name for name in args.model or [] if name not in settings.models]
    if unknown:
        raise UsageError(f"--model {unknown[0]}: not in the allow-list (TOKENTREE_MODELS): "
                         + ", ".join(settings.models))
    if settings.redis_url is None or settings.database_url is None:
        raise UsageError("tokentree worker needs TOKENTREE_REDIS_URL and TOKENTREE_DATABASE_URL (Postgres); "
                         "without them `tokentree serve` runs jobs in its own process")
    if args.processes < 1:
        raise UsageError(f"--processes must be at least 1, got {args.processes}")
    if args.threads < 0:
        raise UsageError(f"--threads must not be negative, got {args.threads}")
    if args.check:
        return check_alive(settings.redis_url, args.name or os.environ.get("TOKENTREE_WORKER_NAME"),
                           len(_gpu_ids(args.gpus)) or args.processes)
    models = args.model or list(settings.models)
    envs = _process_envs(args, models)
    _check_gpus(_gpu_ids(args.gpus))
    _check_names_free(settings.redis_url, [env["TOKENTREE_WORKER_NAME"] for env in envs])
    if len(envs) == 1:
        # The worker becomes this process: signals (a warm shutdown on SIGTERM) go straight to Celery.
        argv = celery_argv(envs[0], models, args.loglevel)
        os.execve(argv[0], argv, envs[0])
    return _supervise([subprocess.Popen(celery_argv(env, models, args.loglevel), env=env) for env in envs])


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait for the worker processes, passing SIGINT and SIGTERM on to them."""

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
