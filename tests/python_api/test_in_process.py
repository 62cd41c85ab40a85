"""`tokentree.build_tree` and `tokentree.logprobs` in this process, with the demo model: the CLI's
documents exactly, the Tree's views of them, and its inline drawing."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tokentree
from tests.python_api.conftest import PROMPT, SMALL, cli_tree_text, without_timing
from tests.utils.cli import REPO_ROOT, run_cli
from tokentree import render
from tokentree.tree import NODE_COLUMNS

# The wall-clock field, the one part of two builds of one tree that differs.
SECONDS = re.compile(r'"seconds": [0-9.e+-]+')


@pytest.mark.parametrize(("prompt", "options", "flags"), [
    (PROMPT, SMALL, ()),
    ("Tell me a story", {"chat": True, "prefix": "Once", "min_branch_threshold": 0.05, "max_depth": 12},
     ("--chat", "--prefix", "Once")),
])
def test_build_tree_writes_the_clis_document(
    tmp_path: Path, prompt: str, options: dict[str, object], flags: tuple[str, ...]
) -> None:
    parameters = {k: v for k, v in options.items() if k not in ("chat", "prefix")}
    expected = cli_tree_text(tmp_path / "cli.json", prompt, *flags, **parameters)
    tree = tokentree.build_tree(prompt, progress=False, **options)  # type: ignore[arg-type]
    # The same text: keys, their order, every number; only the timing differs.
    assert SECONDS.sub('"seconds": 0', tree.to_json()) == SECONDS.sub('"seconds": 0', expected)
    assert tree.to_dict() == json.loads(tree.to_json())
    # A document read back writes itself again, byte for byte.
    assert tokentree.Tree.from_json(expected).to_json() == expected
    assert without_timing(tokentree.Tree.from_json(expected.encode()).to_json()) == without_timing(expected)


def test_paths_are_the_completed_ones_most_probable_first() -> None:
    tree = tokentree.build_tree(PROMPT, progress=False, **SMALL)
    paths = tree.paths()
    finished = [node for node in tree.nodes if node.finish_reason == "stop"]
    assert len(paths) == len(finished) == tree.metadata["stats"]["completed_paths"] > 1
    assert [p.cumulative_prob for p in paths] == sorted((p.cumulative_prob for p in paths), reverse=True)
    assert tree.paths(limit=2) == paths[:2]
    best = paths[0]
    chain = []
    node = tree.nodes[best.node_id]
    while node.parent_id is not None:
        chain.append(node)
        node = tree.nodes[node.parent_id]
    chain.reverse()
    assert best.text == "".join(n.text for n in chain)
    assert best.token_ids == [n.token_id for n in chain]
    assert math.isclose(best.cumulative_prob, math.prod(math.exp(n.logprob) for n in chain), rel_tol=1e-6)
    # The same ranking from the CLI's document read back.
    assert [p.text for p in tokentree.Tree.from_json(tree.to_json()).paths()] == [p.text for p in paths]


def test_to_dataframe_has_a_row_per_node() -> None:
    tree = tokentree.build_tree(PROMPT, progress=False, **SMALL)
    df = tree.to_dataframe()
    assert len(df) == len(tree) and df.index.name == "id"
    assert list(df.columns) == list(NODE_COLUMNS[1:])
    assert df["child_count"].sum() == len(tree) - 1
    assert int(df["is_finished"].sum()) == sum(1 for n in tree.nodes if n.is_finished)
    assert str(df["parent_id"].dtype) == "Int64" and df["parent_id"].isna().sum() == 1  # only the root
    root = df.loc[0]
    assert root["text"] == PROMPT and root["candidates"] == [c.to_json() for c in tree.root.candidates]
    assert df["entropy"].idxmax() in {n.id for n in tree.nodes if n.is_expanded}


def test_to_dataframe_without_pandas_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tokentree.build_tree(PROMPT, progress=False, max_nodes=20)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'tokentree\[pandas\]'"):
        tree.to_dataframe()


def test_the_inline_drawing_is_self_contained() -> None:
    tree = tokentree.build_tree(PROMPT, progress=False, **SMALL)
    html = tree._repr_html_()
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "src=" not in html and "href=" not in html and "url(" not in html
    assert html.count("<svg") == 1 and PROMPT in html
    # every node is in a drawn segment: runs of single children merge, so fewer segments than nodes
    assert 1 < html.count("<circle") < len(tree)
    assert html.count('fill="#1a8a4a"') == len(tree.paths())  # a green square where each path completed
    assert "segments drawn" not in html  # small enough to draw whole


def test_the_inline_drawing_of_a_big_tree_draws_a_part_and_says_so() -> None:
    tree = tokentree.build_tree(PROMPT, progress=False, min_branch_threshold=0.05, max_branch_threshold=0.3,
                                soft_queue_limit=1000, max_depth=40, max_completed_paths=1_000_000,
                                max_nodes=2000)
    html = tree._repr_html_()
    assert html.count("<circle") == render.MAX_SEGMENTS
    assert f"{render.MAX_SEGMENTS} of " in html and "segments drawn" in html
    assert "http://" not in html and "https://" not in html


def test_the_inline_drawing_escapes_the_text() -> None:
    prompt = 'A <script>alert("x")</script> & <i>'
    html = tokentree.build_tree(prompt, progress=False, max_nodes=30)._repr_html_()
    assert "<script" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(("parameters", "field"), [
    ({"max_nodes": 0}, "max_nodes"),
    ({"max_node": 10}, "max_node"),
    ({"min_branch_threshold": 0.6}, "min_branch_threshold"),
])
def test_a_wrong_parameter_raises_before_any_work(parameters: dict[str, object], field: str) -> None:
    with pytest.raises(tokentree.ParameterError) as raised:
        tokentree.build_tree(PROMPT, **parameters)  # type: ignore[arg-type]
    assert raised.value.field == field
    with pytest.raises(tokentree.ParameterError, match="prompt"):
        tokentree.build_tree("   ")


def test_progress_goes_to_stderr_unless_turned_off(capfd: pytest.CaptureFixture[str]) -> None:
    tokentree.build_tree(PROMPT, max_nodes=60)
    shown = capfd.readouterr()
    assert "expanding" in shown.err and "nodes" in shown.err and shown.out == ""
    tokentree.build_tree(PROMPT, max_nodes=60, progress=False)
    assert "expanding" not in capfd.readouterr().err


def test_logprobs_is_the_clis_record(tmp_path: Path) -> None:
    out = tmp_path / "logprobs.jsonl"
    prompt = "Once upon a time"
    done = run_cli("logprobs", prompt, "-q", "-o", str(out), "--max-new-tokens", "12", "--top-k", "3",
                   timeout=300)
    assert done.returncode == 0, done.stderr
    record = tokentree.logprobs(prompt, max_new_tokens=12, top_k=3)
    assert json.dumps(record) == out.read_text(encoding="utf-8").strip()
    with pytest.raises(tokentree.ParameterError, match="top_k"):
        tokentree.logprobs(prompt, top_k=0)


def test_score_is_the_clis_record(tmp_path: Path) -> None:
    out = tmp_path / "score.jsonl"
    prompt, text = "Tell me a story", ", there was a little fox."
    done = run_cli("score", prompt, "--text", text, "--chat", "--prefix", "Once upon a time", "--top-k", "2",
                   "--include-prompt", "-o", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    record = tokentree.score(prompt, text, chat=True, prefix="Once upon a time", top_k=2, include_prompt=True)
    assert json.dumps(record) == out.read_text(encoding="utf-8").strip()
    assert record["response"] == "Once upon a time" + text
    with pytest.raises(tokentree.ParameterError, match="include_prompt"):
        tokentree.score(prompt, text, include_prompt="yes")
    with pytest.raises(tokentree.ParameterError, match="text"):
        tokentree.score(prompt, "")


def test_a_trees_paths_begin_with_the_forced_prefix() -> None:
    """`Tree.paths()` gives each path's response: the prefix (metadata.prefix, no token of the tree), then
    its tokens; the same read back from the JSON."""
    tree = tokentree.build_tree("Once upon a time", prefix=", there was a dragon", max_nodes=150,
                                progress=False)
    paths = tree.paths()
    assert paths and all(p.text.startswith(", there was a dragon") for p in paths)
    assert [p.text for p in tokentree.Tree.from_json(tree.to_json()).paths()] == [p.text for p in paths]


def test_importing_tokentree_loads_neither_torch_nor_the_service() -> None:
    heavy = ["torch", "transformers", "api", "workers", "models", "cli", "sqlalchemy", "fastapi", "celery"]
    code = f"import sys, tokentree; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert sorted(tokentree.__all__) == sorted(set(tokentree.__all__))
    assert all(hasattr(tokentree, name) for name in tokentree.__all__)
    assert (Path(tokentree.__file__).parent / "py.typed").is_file()
