"""Prometheus metrics for /metrics, read when scraped (a collector per app, no global registry).

- tokentree_jobs{status}: jobs in each status (Postgres, one GROUP BY);
- tokentree_nodes: nodes stored over all jobs (the jobs' counters), and tokentree_nodes_per_second: its
  growth since the previous scrape (or `rate(tokentree_nodes[1m])` in Prometheus);
- tokentree_frontier_nodes: open nodes of running jobs (Redis, one SCARD per running job; the
  embedded mode counts them in the database);
- tokentree_queue_messages{model}: Celery messages waiting on each model's queue;
- tokentree_workers_alive: workers that answered Celery's ping (refreshed in the background every
  WORKER_PING_EVERY_S, so a scrape never waits on it; -1 until the first answer is in);
- tokentree_up{dependency}: whether the database and the broker answered this scrape;
- tokentree_requests_refused_total{reason}: requests refused (auth, rate_limit, quota, database).

A dependency that is down makes its metrics absent and its `tokentree_up` 0; /metrics still answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.dispatch import model_queue
from models import jobs, node_reads
from models.schema import Job
from models.settings import Settings

log = logging.getLogger(__name__)

WORKER_PING_EVERY_S = 10.0
WORKER_PING_TIMEOUT_S = 1.0
MAX_RUNNING_JOBS_READ = 1_000
REFUSAL_REASONS = ("auth", "rate_limit", "quota", "database")


def frontier_key(job_id: object) -> str:
    """The Redis SET of a job's open nodes (workers/frontier.py `job_key(job_id, "open")`)."""
    return f"tokentree:job:{job_id}:open"


def ping_workers(celery_app: Any, timeout_s: float) -> list[str]:
    """The names of the Celery workers that answer a ping within `timeout_s` (busy ones may not)."""
    replies = celery_app.control.ping(timeout=timeout_s) or []
    return sorted(name for reply in replies for name in reply)


class WorkerWatch:
    """Pings the workers in a background thread, so scrapes read the last count instantly."""

    def __init__(self, celery_app: Any) -> None:
        self.celery_app = celery_app
        self.alive = -1
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def ensure_started(self) -> None:
        with self.lock:
            if self.thread is None and not self.stop_event.is_set():
                self.thread = threading.Thread(target=self._run, name="tokentree-worker-ping", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.alive = len(ping_workers(self.celery_app, WORKER_PING_TIMEOUT_S))
            except Exception as exc:
                log.warning("metrics: cannot ping the workers: %s", exc)
                self.alive = -1
            self.stop_event.wait(WORKER_PING_EVERY_S)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=WORKER_PING_TIMEOUT_S + 2)


class ServiceCollector(Collector):
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 broker: redis.Redis | None, workers: WorkerWatch | None) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.broker = broker
        self.workers = workers
        self.last_nodes: tuple[float, int] | None = None
        self.nodes_per_second = 0.0

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read live on every scrape; nothing to describe up front

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("tokentree_up", "Whether a dependency answered this scrape",
                               labels=["dependency"])
        running: list[Any] = []
        try:
            with self.session_factory() as session:
                counts = jobs.count_by_status(session)
                nodes = int(session.scalar(select(func.coalesce(func.sum(Job.node_count), 0))) or 0)
                running = list(session.scalars(
                    select(Job.id).where(Job.status == "running").limit(MAX_RUNNING_JOBS_READ)))
                frontier_db = None
                if self.broker is None:
                    frontier_db = sum(node_reads.job_progress(session, job).frontier or 0 for job in running)
        except Exception as exc:
            log.warning("metrics: database unreachable: %s", exc)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            by_status = GaugeMetricFamily("tokentree_jobs", "Jobs in each status", labels=["status"])
            for status, count in counts.items():
                by_status.add_metric([status], count)
            yield by_status
            yield GaugeMetricFamily("tokentree_nodes", "Nodes stored, over all jobs", value=nodes)
            yield GaugeMetricFamily("tokentree_nodes_per_second",
                                    "Growth of tokentree_nodes since the previous scrape",
                                    value=self._rate(nodes))
            if frontier_db is not None:
                yield GaugeMetricFamily("tokentree_frontier_nodes", "Open nodes of running jobs",
                                        value=frontier_db)
        if self.broker is None:
            up.add_metric(["broker"], 1)  # embedded: no broker to be down
            yield GaugeMetricFamily("tokentree_workers_alive", "Workers answering (embedded: this process)",
                                    value=1)
        else:
            yield from self._from_broker(up, running)
        yield up

    def _rate(self, nodes: int) -> float:
        now = time.monotonic()
        if self.last_nodes is None:
            self.last_nodes = (now, nodes)
        elif now - self.last_nodes[0] >= 1.0:
            then, before = self.last_nodes
            self.nodes_per_second = max(0, nodes - before) / (now - then)
            self.last_nodes = (now, nodes)
        return self.nodes_per_second

    def _from_broker(self, up: GaugeMetricFamily, running: list[Any]) -> Iterator[Metric]:
        assert self.broker is not None
        models = list(self.settings.models)
        try:
            pipe = self.broker.pipeline(transaction=False)
            for model in models:
                pipe.llen(model_queue(model))
            for job_id in running:
                pipe.scard(frontier_key(job_id))
            replies = pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: broker unreachable: %s", exc)
            up.add_metric(["broker"], 0)
        else:
            up.add_metric(["broker"], 1)
            queues = GaugeMetricFamily("tokentree_queue_messages", "Messages waiting on a model's queue",
                                       labels=["model"])
            for model, length in zip(models, replies[:len(models)], strict=True):
                queues.add_metric([model], length)
            yield queues
            yield GaugeMetricFamily("tokentree_frontier_nodes", "Open nodes of running jobs",
                                    value=sum(replies[len(models):]))
        if self.workers is not None:
            self.workers.ensure_started()
            yield GaugeMetricFamily("tokentree_workers_alive",
                                    "Workers that answered Celery's last ping (-1: unknown yet)",
                                    value=self.workers.alive)


class Metrics:
    """The app's registry: the live collector and the counters the routes bump."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 broker: redis.Redis | None, workers: WorkerWatch | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(settings, session_factory, broker, workers))
        self.refused_total = Counter("tokentree_requests_refused", "Requests refused, by reason",
                                     labelnames=["reason"], registry=self.registry)
        for reason in REFUSAL_REASONS:  # present from the start, at 0
            self.refused_total.labels(reason=reason)

    def refused(self, reason: str) -> None:
        self.refused_total.labels(reason=reason).inc()
