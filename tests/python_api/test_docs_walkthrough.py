"""docs/python.md runs: its Python blocks, in order, as the cells of one notebook (the last expression of
a cell is displayed, through `_repr_html_` where it has one), against the demo model and the session's
embedded service in place of `tokentree serve`'s address."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

import tokentree
from tests.utils.cli import REPO_ROOT
from tests.utils.servers import LiveAPI

WALKTHROUGH = REPO_ROOT / "docs" / "python.md"
DOCUMENTED_URL = "http://127.0.0.1:8000"
CELL = re.compile(r"^```python\n(.*?)^```$", flags=re.MULTILINE | re.DOTALL)


def cells(text: str) -> list[str]:
    return CELL.findall(text)


def run_cell(source: str, namespace: dict[str, Any]) -> Any:
    """Run one cell; return what a notebook would display (its last expression's value), else None."""
    body = ast.parse(source)
    last = body.body.pop() if body.body and isinstance(body.body[-1], ast.Expr) else None
    exec(compile(body, "<cell>", "exec"), namespace)
    assert last is None or isinstance(last, ast.Expr)
    if last is None:
        return None
    value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
    if hasattr(value, "_repr_html_"):
        value._repr_html_()
    return value


def test_the_walkthrough_runs(service: LiveAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # it saves tree.json
    text = WALKTHROUGH.read_text(encoding="utf-8")
    assert DOCUMENTED_URL in text
    namespace: dict[str, Any] = {}
    shown = [run_cell(cell.replace(DOCUMENTED_URL, service.url), namespace) for cell in cells(text)]
    assert len(shown) >= 10

    assert isinstance(namespace["tree"], tokentree.Tree) and isinstance(namespace["served"], tokentree.Tree)
    assert namespace["job"].status == "succeeded" and namespace["analysis"].status == "succeeded"
    assert namespace["scoring"].status == "succeeded" and namespace["scoring"].kind == "score"
    # The scored car stands out: the model ranks " ca" far down; the served fox is likely.
    assert max(step["rank"] for step in namespace["scored"]["data"]) > 100
    assert namespace["record"]["response"].strip()  # the logprobs example answers something
    # The study: all its jobs done, and the top fork is where the text says, right after the India prompt.
    assert namespace["study"].done and namespace["study"].progress.by_status["succeeded"] == 3
    top = namespace["forks"].iloc[0]
    assert (top["prompt"], top["path_text"]) == ("The capital of India is", "")
    assert len(namespace["nodes"]) == namespace["study"].progress.nodes
    assert any(value is True for value in shown)  # the saved tree read back writes the same document
    assert any(isinstance(value, str) and value == "cancelled" for value in shown)
    printed = capsys.readouterr().out
    assert "max_branch_threshold: must be between 0 and 1" in printed  # the ParameterError cell
    assert "422 parameters.max_nodes: must be between 1 and" in printed  # the APIError cell
    assert f"{namespace['tree'].paths()[0].cumulative_prob:.4f}  Once upon a time" in printed
    assert (tmp_path / "tree.json").read_text(encoding="utf-8") == namespace["tree"].to_json()


def test_the_readme_shows_the_python_api_and_links_the_walkthrough() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    assert "import tokentree" in section and "(docs/python.md)" in section
    for name in ("build_tree", "Client", "paths", "to_dataframe", "wait", "tree", "score"):
        assert name in section
