"""The service's settings, read once from `TOKENTREE_*` environment variables.

With neither `TOKENTREE_DATABASE_URL` nor `TOKENTREE_REDIS_URL` set, everything runs in one process:
SQLite under `TOKENTREE_DATA_DIR` and an in-process worker (the embedded default). Setting both gives
the distributed service: Postgres, Redis as the Celery broker, and `tokentree worker` processes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tokentree.engine.params import MAX_DEPTH_LIMIT, MAX_NEW_TOKENS_LIMIT, MAX_NODES_LIMIT

# A model name becomes part of a Celery queue name and a URL: keep it to plain characters.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Passwords that only ever belong in examples; refused outside a local environment.
EXAMPLE_PASSWORDS = frozenset({"changethis", "postgres", "password"})


def default_data_dir() -> Path:
    """Where the embedded mode keeps its SQLite file: $XDG_DATA_HOME/tokentree (~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tokentree"


# Per-model loading options an allow-list entry may carry (`name=source;dtype=bf16;quantize=4bit`): the
# values `engine.loading.ModelSpec` takes (repeated here: this module must not import torch).
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "dtype": ("auto", "bf16", "fp16", "fp32"),
    "device": ("auto", "cpu", "cuda"),
    "quantize": ("none", "4bit", "8bit"),
}


@dataclass(frozen=True)
class ModelOptions:
    """How a worker loads one allow-list entry; None: the service's TOKENTREE_DTYPE / TOKENTREE_DEVICE
    (and no quantization)."""

    dtype: str | None = None
    device: str | None = None
    quantize: str | None = None

    def describe(self) -> str:
        """`dtype=bf16;quantize=4bit`, the options that are set, as an entry writes them."""
        return ";".join(f"{key}={value}" for key, value in vars(self).items() if value is not None)


def _entry_options(entry: str, text: str) -> ModelOptions:
    values: dict[str, str] = {}
    for option in text.split(";"):
        option = option.strip()
        if not option:
            continue
        key, equals, value = (part.strip() for part in option.partition("="))
        if key not in MODEL_OPTIONS:
            raise ValueError(f"model entry {entry!r}: unknown option {key!r} "
                             f"(options: {', '.join(MODEL_OPTIONS)})")
        if not equals or value not in MODEL_OPTIONS[key]:
            raise ValueError(f"model entry {entry!r}: {key} must be one of "
                             f"{', '.join(MODEL_OPTIONS[key])}, got {value!r}")
        if key in values:
            raise ValueError(f"model entry {entry!r}: {key} is given twice")
        values[key] = value
    options = ModelOptions(**values)
    if options.quantize not in (None, "none") and options.device == "cpu":
        raise ValueError(f"model entry {entry!r}: {options.quantize} quantization runs on bitsandbytes "
                         "and needs device=cuda (or auto)")
    return options


def parse_model_entries(text: str) -> dict[str, tuple[str, ModelOptions]]:
    """The allow-list with each entry's loading options: name -> (source, options).

    Entries are comma-separated: `name` (its own source), `name=source`, and either followed by
    `;option=value` pairs: `dtype` (auto, bf16, fp16, fp32), `device` (auto, cpu, cuda) and `quantize`
    (none, 4bit, 8bit). E.g. `demo,gemma=google/gemma-2-2b-it;dtype=bf16;quantize=4bit`.
    """
    models: dict[str, tuple[str, ModelOptions]] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        head, _, option_text = entry.partition(";")
        name, _, source = head.partition("=")
        name, source = name.strip(), source.strip() or name.strip()
        if not MODEL_NAME.match(name):
            raise ValueError(f"model name {name!r} must be letters, digits, '_', '.' or '-' (64 at most)")
        if name in models:
            raise ValueError(f"model name {name!r} is listed twice")
        models[name] = (source, _entry_options(entry, option_text))
    if not models:
        raise ValueError("the model allow-list is empty")
    return models


def parse_models(text: str) -> dict[str, str]:
    """`demo,gemma=google/gemma-2-2b-it` -> {"demo": "demo", "gemma": "google/gemma-2-2b-it"}.

    An entry without `=` is its own source (`demo` is the bundled checkpoint, anything else a Hub id);
    loading options after `;` are checked and left out (see `parse_model_entries`).
    """
    return {name: source for name, (source, _) in parse_model_entries(text).items()}


class Settings(BaseSettings):
    """Everything an operator can set. Caps bound what a client may ask for, below the engine's own."""

    model_config = SettingsConfigDict(env_prefix="TOKENTREE_", extra="ignore", frozen=True)

    environment: Literal["local", "staging", "production"] = "local"
    # None: the embedded SQLite file. Otherwise a Postgres URL (postgresql://, postgresql+psycopg://).
    database_url: str | None = None
    # None: jobs run in-process. Otherwise the Celery broker, and the home of the jobs' frontiers.
    redis_url: str | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    # The operator's allow-list, name -> source (`demo`, a Hub id or a folder). Clients name an entry;
    # the first one is the default.
    models: Annotated[dict[str, str], NoDecode] = Field(default_factory=lambda: {"demo": "demo"})
    # Each entry's loading options, read from the same variable (`name=source;dtype=bf16;quantize=4bit`);
    # an entry without options is not here and loads with `dtype` and `device` below.
    model_options: Annotated[dict[str, ModelOptions], NoDecode] = Field(default_factory=dict)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    # Caps on what one request may ask for.
    max_nodes: int = Field(default=100_000, ge=1, le=MAX_NODES_LIMIT)
    max_depth: int = Field(default=10_000, ge=1, le=MAX_DEPTH_LIMIT)
    max_new_tokens: int = Field(default=2_000, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    max_prompt_chars: int = Field(default=20_000, ge=1)
    max_request_bytes: int = Field(default=256 * 1024, ge=1024)
    max_page_size: int = Field(default=200, ge=1)
    max_paths: int = Field(default=1_000, ge=1)
    # GET /v1/compare reads both trees whole: each may hold at most this many nodes.
    compare_max_nodes: int = Field(default=100_000, ge=1)
    # Server-sent events: how often a job is looked at, and how long one stream may last (clients
    # reconnect) so a forgotten tab does not hold a connection forever.
    events_interval_s: float = Field(default=0.5, gt=0)
    events_max_s: float = Field(default=3600.0, gt=0)
    # Event streams open at once in one API process: per caller (API key, or client address), and in all.
    events_max_per_caller: int = Field(default=8, ge=1)
    events_max_total: int = Field(default=200, ge=1)
    # Tree renders running at once in one API process, per caller and in all: a 100,000-node tree takes
    # seconds of a core and a few hundred MB while it renders. A tree served from memory takes none.
    renders_max_per_caller: int = Field(default=2, ge=1)
    renders_max_total: int = Field(default=4, ge=1)
    # Memory for rendered trees of finished jobs (they never change); 0 turns the cache off.
    tree_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)

    # Workers: nodes per forward pass, and how models load.
    max_batch: int = Field(default=256, ge=1, le=8_192)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"

    # Access. With keys required, every /v1 request carries `Authorization: Bearer <token>` (see
    # `tokentree keys`); production refuses to start without them. Browsers on other origins get no
    # CORS headers unless their origin is listed (comma-separated).
    require_api_key: bool = False
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Abuse limits per API key (per client address without one): a token bucket of requests (0: off),
    # refilled at `rate_limit_per_minute`, holding at most `rate_limit_burst`; and queued + running
    # jobs one key may have at once (0: no quota).
    rate_limit_per_minute: int = Field(default=600, ge=0)
    rate_limit_burst: int = Field(default=120, ge=1)
    max_active_jobs_per_key: int = Field(default=20, ge=0)
    # Studies: jobs one study may make (every combination of its prompts, models and parameter sets);
    # studies with open jobs one key may have at once (0: no quota; a study's jobs do not count towards
    # `max_active_jobs_per_key`); and the nodes a Parquet export may hold (it is written whole before it
    # is sent; CSV streams, whatever the size).
    study_max_jobs: int = Field(default=500, ge=1)
    max_active_studies_per_key: int = Field(default=2, ge=0)
    study_parquet_max_rows: int = Field(default=5_000_000, ge=1)
    # Growths in place one tree job may have (`POST /v1/jobs/{id}/expand`): each adds up to its own
    # max_nodes, so this bounds what one job can become.
    max_growths_per_job: int = Field(default=100, ge=0)
    # Reverse proxies whose X-Forwarded-For / -Proto headers are believed (comma-separated addresses, as
    # uvicorn's --forwarded-allow-ips); empty: none, so no client can pick the address it is limited by.
    trusted_proxies: str = ""
    # A connection must send a request's line and headers within this long of opening (or of its last
    # response), or it is closed: half-sent requests cannot pile up (api/http_protocol.py).
    head_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # An unreachable database is a quick 503, not a hung request: bounds on connecting to it and on
    # waiting for a pooled connection.
    db_connect_timeout_s: int = Field(default=2, ge=1, le=60)
    db_pool_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # ... and a database that answers nothing, or a table locked by someone else: the API's statements give
    # up after these (a 503), so one stuck table cannot hold every request thread. A pooled connection
    # whose host went away is found dead by TCP keepalive within about `db_keepalive_s` x 2; a statement
    # a frozen server never answers has its connection closed after `db_read_timeout_s` (models/deadline.py).
    db_statement_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    db_lock_timeout_s: float = Field(default=3.0, gt=0, le=3600)
    db_keepalive_s: int = Field(default=10, ge=1, le=3600)
    db_read_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # The API's connections: as many as its thread pool runs requests at once (40), so a burst waits
    # for a thread, not for a connection (and the short pool timeout does not turn it into 503s).
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=30, ge=0, le=200)

    # Logs: one JSON object per line (with the job id when there is one), or plain text.
    log_format: Literal["json", "text"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _split_model_entries(cls, data: Any) -> Any:
        """TOKENTREE_MODELS as text: the sources go to `models`, the options to `model_options`."""
        if isinstance(data, dict) and isinstance(data.get("models"), str):
            try:
                entries = parse_model_entries(data["models"])
            except ValueError:
                return data  # the `models` field reports it, under TOKENTREE_MODELS
            data = {**data, "models": {name: source for name, (source, _) in entries.items()}}
            data["model_options"] = {name: options for name, (_, options) in entries.items()
                                     if options != ModelOptions()}
        return data

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        return parse_models(value) if isinstance(value, str) else value

    def options_of(self, name: str) -> ModelOptions:
        """How to load allow-list entry `name`: its own options, the service's defaults for the rest."""
        own = self.model_options.get(name, ModelOptions())
        return ModelOptions(dtype=own.dtype or self.dtype, device=own.device or self.device,
                            quantize=own.quantize or "none")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        for origin in value:
            if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
                raise ValueError(f"origin {origin!r} must be an http:// or https:// URL (or *)")
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = value.split(":", 1)[0]
        # psycopg 3 is the driver we ship; the bare schemes would ask SQLAlchemy for psycopg2.
        if scheme in ("postgres", "postgresql"):
            return "postgresql+psycopg:" + value.split(":", 1)[1]
        if scheme.startswith(("postgresql+", "sqlite")):
            return value
        raise ValueError(f"must be a postgresql:// or sqlite:// URL, got scheme {scheme!r}")

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme not in ("redis", "rediss"):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.redis_url and not (self.database_url or "").startswith("postgresql"):
            # Workers on other machines cannot share the embedded SQLite file.
            raise ValueError("TOKENTREE_REDIS_URL needs TOKENTREE_DATABASE_URL, a Postgres the workers share")
        if self.environment != "local":
            for name in ("database_url", "redis_url"):
                url = getattr(self, name)
                if url and urlsplit(url).password in EXAMPLE_PASSWORDS:
                    raise ValueError(f"{name} has an example password; set a real one for {self.environment}")
        if self.environment == "production" and not self.require_api_key:
            raise ValueError("production needs TOKENTREE_REQUIRE_API_KEY=true "
                             "(create keys with `tokentree keys create NAME`)")
        return self

    @property
    def embedded(self) -> bool:
        """Jobs run in this process (no broker), as `tokentree serve` does by default."""
        return self.redis_url is None

    @property
    def default_model(self) -> str:
        return next(iter(self.models))

    @property
    def sqlalchemy_url(self) -> str:
        """The database to use: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+pysqlite:///{self.data_dir / 'tokentree.sqlite3'}"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
