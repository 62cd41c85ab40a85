"""Settings from TOKENTREE_* variables: parsing, defaults, and the combinations refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tokentree.engine.params import MAX_NODES_LIMIT
from tokentree.models.settings import ModelOptions, Settings, parse_model_entries, parse_models


def test_the_default_is_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TOKENTREE_DATABASE_URL", "TOKENTREE_REDIS_URL", "TOKENTREE_MODELS", "TOKENTREE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings()
    assert settings.embedded and settings.database_url is None and settings.redis_url is None
    assert settings.sqlalchemy_url == f"sqlite+pysqlite:///{tmp_path / 'tokentree' / 'tokentree.sqlite3'}"
    assert settings.models == {"demo": "demo"} and settings.default_model == "demo"


def test_read_from_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTREE_DATABASE_URL", "postgresql://u:p@db:5432/tt")
    monkeypatch.setenv("TOKENTREE_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("TOKENTREE_MODELS", "demo, gemma=google/gemma-2-2b-it")
    monkeypatch.setenv("TOKENTREE_MAX_NODES", "5000")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u:p@db:5432/tt"  # psycopg 3, not psycopg2
    assert not settings.embedded and settings.redis_url == "redis://cache:6379/2"
    assert settings.models == {"demo": "demo", "gemma": "google/gemma-2-2b-it"}
    assert settings.max_nodes == 5000


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), (" , ", "empty"), ("a b", "must be letters"), ("demo,demo=x", "twice"),
     ("../x=y", "must be letters"), ("=google/gemma", "must be letters")],
)
def test_bad_allow_lists(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_models(text)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis_url": "redis://r:6379/0"}, "needs TOKENTREE_DATABASE_URL"),
        ({"redis_url": "redis://r:6379/0", "database_url": "sqlite:///x.db"}, "a Postgres the workers share"),
        ({"database_url": "mysql://x/y"}, "postgresql:// or sqlite://"),
        ({"database_url": "postgresql://x/y", "redis_url": "http://r"}, "redis://"),
        ({"max_nodes": MAX_NODES_LIMIT + 1}, "less than or equal"),
        ({"max_nodes": 0}, "greater than or equal"),
        ({"environment": "production", "database_url": "postgresql://u:changethis@db/t"}, "example password"),
        ({"environment": "staging", "database_url": "postgresql://u:postgres@db/t"}, "example password"),
    ],
)
def test_unsafe_or_wrong_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_an_example_password_is_fine_on_a_laptop() -> None:
    assert Settings(database_url="postgresql://u:changethis@db/t").database_url is not None


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().max_nodes = 3



def test_allow_list_entries_carry_loading_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTREE_MODELS", "demo, gemma=google/gemma-2-2b-it;dtype=bf16;quantize=4bit ,"
                                           "small;device=cpu;dtype=fp32, big=/models/big; quantize = 8bit")
    monkeypatch.setenv("TOKENTREE_DTYPE", "fp16")
    settings = Settings()
    # The old syntax stays valid, and the sources are what they were.
    assert settings.models == {"demo": "demo", "gemma": "google/gemma-2-2b-it", "small": "small",
                               "big": "/models/big"}
    assert set(settings.model_options) == {"gemma", "small", "big"}  # entries without options are absent
    assert settings.options_of("gemma") == ModelOptions(dtype="bf16", device="auto", quantize="4bit")
    assert settings.options_of("small") == ModelOptions(dtype="fp32", device="cpu", quantize="none")
    assert settings.options_of("big") == ModelOptions(dtype="fp16", device="auto", quantize="8bit")
    assert settings.options_of("demo") == ModelOptions(dtype="fp16", device="auto", quantize="none")
    assert settings.model_options["gemma"].describe() == "dtype=bf16;quantize=4bit"
    assert parse_models("gemma=google/gemma-2-2b-it;dtype=bf16") == {"gemma": "google/gemma-2-2b-it"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("demo,gemma=g/x;dtype=int3", "model entry 'gemma=g/x;dtype=int3': dtype must be one of auto, bf16, "
                                      "fp16, fp32, got 'int3'"),
        ("gemma=g/x;colour=red", "model entry 'gemma=g/x;colour=red': unknown option 'colour' "
                                 "\\(options: dtype, device, quantize\\)"),
        ("gemma;device", "model entry 'gemma;device': device must be one of auto, cpu, cuda, got ''"),
        ("gemma;quantize=2bit", "quantize must be one of none, 4bit, 8bit, got '2bit'"),
        ("gemma;dtype=bf16;dtype=fp16", "model entry 'gemma;dtype=bf16;dtype=fp16': dtype is given twice"),
        ("gemma;device=cpu;quantize=4bit", "model entry 'gemma;device=cpu;quantize=4bit': 4bit quantization "
                                           "runs on bitsandbytes and needs device=cuda"),
        (";dtype=bf16", "model name '' must be letters"),
    ],
)
def test_bad_model_options_name_their_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_model_entries(text)
    with pytest.raises(ValidationError, match=message):
        Settings(models=text)  # type: ignore[arg-type]


def test_a_bad_entry_is_reported_under_its_variable(tmp_path: Path) -> None:
    from tests.utils.cli import run_cli

    done = run_cli("models", TOKENTREE_MODELS="demo,gemma=g/x;dtype=int3", XDG_DATA_HOME=str(tmp_path))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("tokentree: error: TOKENTREE_MODELS:")
    assert "model entry 'gemma=g/x;dtype=int3'" in line
    done = run_cli("models", TOKENTREE_MODELS="demo,gemma=g/x;dtype=bf16", XDG_DATA_HOME=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["demo\tdemo  (default)", "gemma\tg/x\tdtype=bf16"]
