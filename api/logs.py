"""Logs: plain text or one JSON object per line (TOKENTREE_LOG_FORMAT), with the job id in context.

Routes call `bind_job(job_id)`; every record logged afterwards in that request (by any logger) carries
`job_id`. A record may also name its job itself: `log.info("...", extra={"job_id": ...})`.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from tokentree.models.settings import Settings

job_id_var: ContextVar[str | None] = ContextVar("tokentree_job_id", default=None)

# The attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def bind_job(job_id: uuid.UUID | str) -> None:
    """Name the job the rest of this request is about, for the logs."""
    job_id_var.set(str(job_id))


class JobIdFilter(logging.Filter):
    """Gives every record a `job_id`: its own, the request's, or None."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, job_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = str(job_id)
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry and name != "job_id" and not name.startswith("_"):
                entry[name] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id = getattr(record, "job_id", None)
        return text if job_id is None else f"{text} [job {job_id}]"


def configure_logging(settings: Settings) -> None:
    """Send every logger (uvicorn's too) to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Alembic names each plugin it sets up at INFO on every start; the migrations applied are what matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
