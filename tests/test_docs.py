"""What the README says about the engine's parameters is what the engine does."""

from __future__ import annotations

import re
from pathlib import Path

from tokentree.engine.params import TreeParams

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readmes_parameter_table_is_the_engines() -> None:
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", README.read_text(), flags=re.MULTILINE)
    table = {name: (default.strip(), meaning.strip().replace("`", "")) for name, default, meaning in rows}
    engine = {p["name"]: (str(p["default"]), p["description"]) for p in TreeParams.describe()}
    assert {name: table.get(name) for name in engine} == engine


def test_the_readmes_score_table_is_the_engines() -> None:
    """The scoring section's table: each of a score job's own parameters (the sampler's are described with
    the other kinds'), its default as JSON writes it, and its meaning."""
    import json

    from tokentree.engine.params import SAMPLER_PARAMETERS, ScoreParams

    section = README.read_text().split("## Scoring a text", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", section, flags=re.MULTILINE)
    table = {name: (default.strip(), meaning.strip().replace("`", "")) for name, default, meaning in rows}
    engine = {p["name"]: (json.dumps(p["default"]), p["description"]) for p in ScoreParams.describe()
              if p["name"] not in SAMPLER_PARAMETERS}
    assert table == engine
