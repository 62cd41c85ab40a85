"""Health, metrics and the models this server runs."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from tokentree.api.deps import ReleasesSession, SessionDep, SettingsDep
from tokentree.api.limits import enforce_rate_limit
from tokentree.api.metrics import Metrics
from tokentree.api.schemas import ErrorOut, HealthOut, ModelOut, ModelsOut, ParameterOut, ParametersOut
from tokentree.api.validation import describe_parameters
from tokentree.models import jobs, worker_registry

log = logging.getLogger(__name__)

router = APIRouter(route_class=ReleasesSession)


@router.get("/v1/models", tags=["models"], dependencies=[Depends(enforce_rate_limit)],
            responses={401: {"model": ErrorOut}, 429: {"model": ErrorOut}})
def list_models(settings: SettingsDep) -> ModelsOut:
    """The models jobs may name (the operator's allow-list); the first is the default."""
    return ModelsOut(models=[ModelOut(name=name, default=name == settings.default_model)
                             for name in settings.models])


@router.get("/v1/parameters", tags=["models"], dependencies=[Depends(enforce_rate_limit)],
            responses={401: {"model": ErrorOut}, 429: {"model": ErrorOut}})
def list_parameters(settings: SettingsDep) -> ParametersOut:
    """The parameters each job kind takes, with this server's defaults and limits (the web form's fields)."""
    return ParametersOut(**{kind: [ParameterOut(**p) for p in describe_parameters(kind, settings)]
                            for kind in ("tree", "logprobs", "score")})


@router.get("/healthz", tags=["health"], responses={503: {"model": HealthOut}})
def health(request: Request, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """Whether the database and the broker answer: the database by reading the jobs table within a
    second (a locked or stalled table is unavailable, not "ok")."""
    database = broker = "ok"
    live: list[worker_registry.WorkerBeat] | None = None  # None: every model is served (embedded), or unknown
    if settings.embedded:
        broker = "embedded"  # its worker serves every model
    else:
        try:
            live = worker_registry.live_workers(request.app.state.broker)  # and so the broker answers
        except Exception as exc:
            log.warning("health: broker unreachable: %s", exc)
            broker = "unreachable"
    unserved: list[str] = []
    try:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"deadline_s": 1.5})  # a frozen server (models/deadline.py)
            session.execute(text("SET LOCAL statement_timeout = 1000"))
            session.execute(text("SET LOCAL lock_timeout = 1000"))
            # A plan per probe: the generic plan a prepared lookup falls back to scans every job of a
            # model nobody has jobs of (10 ms at 100,000 open jobs), where the model's own plan is an
            # index lookup (bench/health_check_cost.py).
            session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        session.execute(text("SELECT 1 FROM jobs LIMIT 1"))  # the table answers (not locked away)
        if live is not None:  # usually no model lacks a worker, and nothing more is read
            unserved = jobs.models_with_open_jobs(session, worker_registry.unserved(settings.models, live))
    except Exception as exc:
        log.warning("health: database unreachable: %s", exc)
        database = "unreachable"
    status: Literal["ok", "degraded", "unavailable"] = "degraded" if unserved else "ok"
    if database != "ok" or broker == "unreachable":
        status = "unavailable"
    body = HealthOut(status=status, database=database, broker=broker, unserved_models=unserved)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unavailable" else 200)


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus' text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: jobs by status, nodes and nodes/s, frontier, queues, workers alive."""
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
