"""`tokentree compare` end to end, as a user runs it: trees the demo model built, the README's example,
and bad files or different prompts as one line with exit status 2."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.test_cli import ROOT, tokentree
from tokentree.engine.compare import compare_trees
from tokentree.tree import Tree


def readme_compare_example() -> list[list[str]]:
    """The commands of the README's "Comparing two trees" example, as argument lists."""
    section = (ROOT / "README.md").read_text().split("## Comparing two trees", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("tokentree ")]
    return [shlex.split(line, comments=True)[1:] for line in lines]


def test_the_readmes_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    commands = readme_compare_example()
    assert [c[0] for c in commands] == ["tree", "tree", "compare"]
    for args in commands[:2]:
        done = tokentree(*args, "-q", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    compared = tokentree(*commands[2], "-o", "diff.json", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    # The README quotes the summary's lines: each must be what the command prints today.
    section = (ROOT / "README.md").read_text().split("## Comparing two trees", 1)[1]
    quoted = section.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    printed = compared.stdout.splitlines()
    assert quoted and all(line in printed for line in quoted if line.strip() and "…" not in line), \
        compared.stdout

    # The report file is the engine's comparison of the two files, as JSON.
    trees = [Tree.from_json((tmp_path / args[args.index("-o") + 1]).read_text()) for args in commands[:2]]
    expected = compare_trees(trees[0].nodes, trees[0].metadata, trees[1].nodes, trees[1].metadata).to_json()
    report = json.loads((tmp_path / "diff.json").read_text())
    assert report == json.loads(json.dumps(expected))
    assert report["only_a"] > 0 and report["only_b"] > 0 and report["shared_expanded"] > 0
    assert report["differences"] == {"parameters.temperature": [0.7, 1.0]}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-node tree of "Once upon a time" by the demo model."""
    out = tmp_path_factory.mktemp("trees") / "tree.json"
    done = tokentree("tree", "Once upon a time", "-q", "--max-nodes", "30", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_a_tree_against_itself(small_tree: Path) -> None:
    out = small_tree
    done = tokentree("compare", str(out), str(out), "--top", "1")
    assert done.returncode == 0, done.stderr
    nodes = len(Tree.from_json(out.read_text()).nodes)
    assert f"shared {nodes}   only in A 0   only in B 0" in done.stdout
    assert "most probable paths: the same in both trees" in done.stdout
    assert "  1. TV=0.000  after the prompt" in done.stdout


@pytest.mark.parametrize(("content", "said"), [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ('{"metadata": {}}', "is not a token tree document"),
    ('{"metadata": {}, "tree": {"id": 0}}', "is not a token tree document"),
    ("[1, 2]", "is not a token tree document"),
])
def test_bad_files_are_one_line_and_exit_2(small_tree: Path, tmp_path: Path, content: str | None, said: str
                                          ) -> None:
    good = small_tree
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    for args in ((str(good), str(bad)), (str(bad), str(good))):
        done = tokentree("compare", *args)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and said in done.stderr and str(bad) in done.stderr, done.stderr


def test_different_prompts_are_refused_in_one_line(small_tree: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    assert tokentree("tree", "Once upon a", "-q", "--max-nodes", "20", "-o", str(other)).returncode == 0
    done = tokentree("compare", str(small_tree), str(other))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "different prompts" in done.stderr and "'Once upon a time'" in done.stderr
