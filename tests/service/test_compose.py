"""docker-compose.yml read against the settings and the CLI (no Docker engine runs here): the services
exist, their commands are real `tokentree` commands, their variables are settings the code reads, and
the URLs they build are ones the settings accept."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokentree.cli.main import build_parser
from tokentree.models.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?(?::?\?[^}]*)?\}")


def substitute(value: Any) -> Any:
    """Compose's `${NAME:-default}` interpolation, with every NAME unset (a fresh checkout, no .env)."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [substitute(v) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return substitute(yaml.safe_load(COMPOSE.read_text()))


def command_line(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "api", "worker", "flower"}
    assert services["flower"]["profiles"] == ["flower"]
    for name in ("api", "worker", "postgres", "redis"):
        assert "profiles" not in services[name]  # started by a plain `docker compose up`


def test_postgres_keeps_its_data_and_says_when_it_is_ready(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    volume = postgres["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data" and volume[0] in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "redis-cli" in compose["services"]["redis"]["healthcheck"]["test"]


def test_tokentree_services_share_valid_settings(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in ("api", "worker"):
        environment = compose["services"][name]["environment"]
        ours = {k: v for k, v in environment.items() if k.startswith("TOKENTREE_")}
        assert {k.removeprefix("TOKENTREE_").lower() for k in ours} <= fields, "a variable no setting reads"
        settings = Settings(**{k.removeprefix("TOKENTREE_").lower(): v for k, v in ours.items()})
        assert not settings.embedded
        assert settings.database_url == "postgresql+psycopg://tokentree:changethis@postgres:5432/tokentree"
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.models == {"demo": "demo"}
    postgres = compose["services"]["postgres"]["environment"]
    url = compose["services"]["api"]["environment"]["TOKENTREE_DATABASE_URL"]
    user, password = postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"]
    assert f"{user}:{password}@postgres:5432/{postgres['POSTGRES_DB']}" in url


def test_the_example_password_is_refused_in_production(compose: dict[str, Any]) -> None:
    environment = compose["services"]["api"]["environment"]
    with pytest.raises(ValueError, match="example password"):
        Settings(environment="production", database_url=environment["TOKENTREE_DATABASE_URL"],
                 redis_url=environment["TOKENTREE_REDIS_URL"])


def test_api_migrates_then_serves_on_its_published_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    steps = command_line(api).removeprefix("sh -c ").split(" && ")
    assert steps[0] == "tokentree db upgrade"
    serve = steps[1].removeprefix("exec ").split()
    assert serve[0] == "tokentree"
    args = build_parser().parse_args(serve[1:])
    assert (args.command, args.host) == ("serve", "0.0.0.0")
    assert api["ports"] == [f"{Settings().port}:{args.port}"]
    assert f":{args.port}/healthz" in " ".join(api["healthcheck"]["test"])
    assert {s: c["condition"] for s, c in api["depends_on"].items()} == {"postgres": "service_healthy",
                                                                         "redis": "service_healthy"}


def test_workers_run_one_process_per_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    argv = command_line(worker).split()
    assert argv[:2] == ["tokentree", "worker"]
    assert "container_name" not in worker and "ports" not in worker
    args = build_parser().parse_args(argv[1:])
    assert args.command == "worker" and args.gpus == "0"  # WORKER_GPUS unset: the first GPU
    assert args.name is None  # each process gets a unique HOST-PID-N name
    # The container sees every GPU; --gpus pins one process to each listed device.
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == "all"
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"  # the schema is migrated first


def test_the_gpu_list_is_one_setting() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]
    assert "${WORKER_GPUS:-0}" in raw["command"]
    assert "${WORKER_GPUS:-0}" in raw["healthcheck"]["test"]  # checks as many workers as it starts


def test_the_worker_healthcheck_checks_its_heartbeats(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "tokentree"
    args = build_parser().parse_args(test[2:])
    assert args.command == "worker" and args.check
    assert args.gpus == build_parser().parse_args(command_line(worker).split()[1:]).gpus
    assert worker["healthcheck"]["start_period"]  # loading a model takes a while


def test_settings_reach_the_containers_from_an_optional_env_file(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        assert compose["services"][name]["env_file"] == [{"path": ".env", "required": False}], name


def test_local_model_folders_are_mounted(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["worker"]["volumes"]
    [local] = [v for v in volumes if v.startswith("./")]
    source, target, mode = local.split(":")
    assert source == "./models-local" and target == "/models" and mode == "ro"
    # An allow-list entry naming a mounted folder, with its loading options, is valid.
    settings = Settings(models=f"demo,mine={target}/mine;dtype=bf16")  # type: ignore[arg-type]
    assert settings.models["mine"] == "/models/mine" and settings.model_options["mine"].dtype == "bf16"
    assert (Path(__file__).resolve().parents[2] / ".gitignore").read_text().count("/models-local/") == 1


def test_flower_watches_the_same_broker(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    broker = compose["services"]["api"]["environment"]["TOKENTREE_REDIS_URL"]
    assert f"--broker={broker}" in flower["command"] and "flower" in flower["command"]
