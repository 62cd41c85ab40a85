"""Prometheus metrics for /metrics, read when scraped (a collector per app, no global registry).

- tokentree_jobs{status}: jobs in each status (Postgres, one GROUP BY);
- tokentree_nodes: nodes stored over all jobs (the jobs' counters), and tokentree_nodes_per_second: its
  growth since the previous scrape (or `rate(tokentree_nodes[1m])` in Prometheus);
- tokentree_frontier_nodes: open nodes of running jobs (Redis, one SCARD per running job; the
  embedded mode counts them in the database);
- tokentree_queue_messages{model}: Celery messages waiting on each model's queue;
- tokentree_workers_alive: workers whose heartbeat key is alive in Redis (models/worker_registry.py):
  busy ones count, since the heartbeat is a thread of its own, not an answer to a ping;
- tokentree_model_workers{model}: live workers serving each model (0: its queue waits for nobody);
- tokentree_up{dependency}: whether the database and the broker answered this scrape;
- tokentree_requests_refused_total{reason}: requests refused (auth, rate_limit, quota, database).

A dependency that is down makes its metrics absent and its `tokentree_up` 0; /metrics still answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tokentree.api.dispatch import model_queue
from tokentree.models import jobs, node_reads, worker_registry
from tokentree.models.schema import Job
from tokentree.models.settings import Settings

log = logging.getLogger(__name__)

MAX_RUNNING_JOBS_READ = 1_000
REFUSAL_REASONS = ("auth", "rate_limit", "quota", "database")


def frontier_key(job_id: object) -> str:
    """The Redis SET of a job's open nodes (workers/frontier.py `job_key(job_id, "open")`)."""
    return f"tokentree:job:{job_id}:open"


class ServiceCollector(Collector):
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 broker: redis.Redis | None) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.broker = broker
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
            workers = worker_registry.live_workers(self.broker)
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
            yield GaugeMetricFamily("tokentree_workers_alive", "Workers whose heartbeat is alive in Redis, "
                                    "busy or not", value=len(workers))
            serving = GaugeMetricFamily("tokentree_model_workers",
                                        "Live workers serving a model (0: nobody takes its jobs)",
                                        labels=["model"])
            for model in models:
                serving.add_metric([model], sum(model in worker.models for worker in workers))
            yield serving


class Metrics:
    """The app's registry: the live collector and the counters the routes bump."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 broker: redis.Redis | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(settings, session_factory, broker))
        self.refused_total = Counter("tokentree_requests_refused", "Requests refused, by reason",
                                     labelnames=["reason"], registry=self.registry)
        for reason in REFUSAL_REASONS:  # present from the start, at 0
            self.refused_total.labels(reason=reason)

    def refused(self, reason: str) -> None:
        self.refused_total.labels(reason=reason).inc()
