"""`tokentree study FILE`: a study from a YAML or JSON file, submitted to a `tokentree serve` on a free
port (the embedded service, its in-process worker building the trees), followed to its end, its top forks
printed; and every bad file or refused study as one line on stderr with exit status 2."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.cli import REPO_ROOT, run_cli, tokentree_serve

# The README's example study, run as it is written there.
README_STUDY = re.search(r"```yaml\n# capitals.yaml\n(.*?)```",
                         (REPO_ROOT / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL)
assert README_STUDY is not None, "the README's study example"
STUDY_YAML = README_STUDY.group(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with tokentree_serve(tmp_path_factory.mktemp("serve")) as client:
        yield client


def study_file(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_study_file_is_submitted_followed_and_its_forks_printed(served: httpx.Client,
                                                                  tmp_path: Path) -> None:
    done = run_cli("study", str(study_file(tmp_path, STUDY_YAML)), "--server", str(served.base_url),
                   "--forks", "5", timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("study capitals (") and lines[0].endswith("): 4 jobs queued")
    study_id = lines[0].split("(")[1].split(")")[0]
    assert lines[1] == f"view: {served.base_url}/viewer/study?id={study_id}"
    study = served.get(f"/v1/studies/{study_id}").json()
    assert study["progress"]["by_status"]["succeeded"] == 4
    assert lines[2] == (f"done: 4 succeeded; {study['progress']['nodes']} nodes, "
                        f"{study['progress']['completed_paths']} completed paths")
    forks = served.get(f"/v1/studies/{study_id}/forks?limit=5").json()["forks"]
    assert len(forks) == 5
    printed = lines[lines.index(next(line for line in lines if line.startswith("top forks by entropy"))) + 1:]
    assert len(printed) == 5
    for line, fork in zip(printed, forks, strict=True):
        assert line.strip().startswith(f"{fork['entropy']:.3f}  {fork['branches']}  ")
        assert f"{fork['prompt']!r} | {fork['path_text']!r} -> {fork['candidates'][0]['text']!r}" in line
    # What the README says of it: the model hesitates right after the India prompt, and names the capital
    # of France at once, hesitating only later.
    assert printed[0].strip().startswith("1.968  2  ")
    assert "'The capital of India is' | '' -> ' beautiful' " in printed[0] and "' short'" in printed[0]
    assert any("'The capital of France is' | ' Paris and it is a'" in line and "1.336" in line
               for line in printed)


def test_no_wait_returns_once_queued(served: httpx.Client, tmp_path: Path) -> None:
    body = {"name": "quick", "prompts": ["I like"], "parameter_sets": [{"max_nodes": 10}]}
    done = run_cli("study", str(study_file(tmp_path, json.dumps(body), "study.json")), "--no-wait",
                   "--server", str(served.base_url))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2 and "1 jobs queued" in done.stdout


@pytest.mark.parametrize(("text", "name", "says"), [
    (None, "missing.yaml", "cannot read"),
    ("name: [unclosed", "study.yaml", "not YAML (line 1"),
    ('{"name": ', "study.json", "not JSON (line 1"),
    ("- a\n- b\n", "study.yaml", "a study is a mapping"),
    ("name: x\nprompt: [a]\n", "study.yaml", "unknown key 'prompt'"),
    ("prompts: [a]\n", "study.yaml", "a study needs a name"),
])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path: Path, text: str | None, name: str, says: str) -> None:
    path = tmp_path / name if text is None else study_file(tmp_path, text, name)
    done = run_cli("study", str(path), "--server", "http://127.0.0.1:9")  # never reached
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("tokentree: error: ")
    assert says in done.stderr


def test_a_refused_study_is_the_services_message(served: httpx.Client, tmp_path: Path) -> None:
    text = "name: x\ntemplate: 'The {animal} sat'\nvalues: [{animal: cat}, {bird: owl}]\n"
    done = run_cli("study", str(study_file(tmp_path, text)), "--server", str(served.base_url))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr == ("tokentree: error: the service refused the study: values.1: has no value for the "
                           "template's field {animal} (fields: animal)\n")


def test_an_unreachable_service_is_one_line(tmp_path: Path) -> None:
    done = run_cli("study", str(study_file(tmp_path, STUDY_YAML)), "--server", "http://127.0.0.1:9")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "cannot reach the tokentree service at http://127.0.0.1:9" in done.stderr
