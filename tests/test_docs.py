"""What the README says about the engine's parameters is what the engine does."""

from __future__ import annotations

import re
from pathlib import Path

from engine.params import TreeParams

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readmes_parameter_table_is_the_engines() -> None:
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", README.read_text(), flags=re.MULTILINE)
    table = {name: (default.strip(), meaning.strip().replace("`", "")) for name, default, meaning in rows}
    engine = {p["name"]: (str(p["default"]), p["description"]) for p in TreeParams.describe()}
    assert {name: table.get(name) for name in engine} == engine
