"""The `tokentree` command end to end, as a user runs it, with the demo model."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tokentree(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "tokentree"), *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tree_writes_the_seed_layout_and_ranks_paths(tmp_path: Path) -> None:
    out = tmp_path / "tree.json"
    done = tokentree("tree", "Once upon a time", "-o", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["tree"]["text"] == "Once upon a time"
    stats = document["metadata"]["stats"]
    assert f"nodes {stats['nodes']}" in done.stdout
    assert f"forward passes {stats['forward_passes']}" in done.stdout
    ranked = [line for line in done.stdout.splitlines() if re.match(r"\s*\d+\. p=", line)]
    assert len(ranked) == 5
    probs = [float(line.split("p=")[1].split()[0]) for line in ranked]
    assert probs == sorted(probs, reverse=True)


def test_flags_reach_the_engine(tmp_path: Path) -> None:
    out = tmp_path / "tree.json"
    done = tokentree(
        "tree",
        "The secret to happiness is",
        "-q",
        "-o",
        str(out),
        "--max-depth",
        "3",
        "--min-branch-threshold",
        "0.05",
        "--max-completed-paths",
        "2",
        "--soft-queue-limit",
        "4",
        "--candidate-threshold",
        "0.2",
        "--max-nodes",
        "40",
        "--max-batch",
        "2",
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    parameters = document["metadata"]["parameters"]
    assert (
        parameters["max_depth"] == 3 and parameters["soft_queue_limit"] == 4 and parameters["max_nodes"] == 40
    )
    stack = [document["tree"]]
    while stack:
        node = stack.pop()
        assert node["depth"] <= 3
        assert all(c["prob"] > 0.2 for c in node["candidates"])
        stack.extend(node["children"])
    assert done.stderr == ""  # --quiet: no progress bar


def test_sampler_flags_reach_the_engine_and_the_summary_prints_the_coverage(tmp_path: Path) -> None:
    out = tmp_path / "tree.json"
    done = tokentree("tree", "The secret to happiness is", "-q", "-o", str(out), "--temperature", "0.7",
                     "--top-p", "0.9", "--min-p", "0.01", "--top-k-filter", "50", "--max-candidates", "3",
                     "--candidate-threshold", "0")
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    parameters = document["metadata"]["parameters"]
    assert (parameters["temperature"], parameters["top_p"], parameters["min_p"], parameters["top_k_filter"],
            parameters["max_candidates"]) == (0.7, 0.9, 0.01, 50, 3)
    stack, nodes = [document["tree"]], []
    while stack:
        nodes.append(stack.pop())
        stack.extend(nodes[-1]["children"])
    assert all(len(n["candidates"]) <= 3 for n in nodes)
    assert any(len(n["candidates"]) == 3 for n in nodes)
    assert any(abs(n["prob"] - n["raw_prob"]) > 0.01 for n in nodes)  # the sampler's against the model's
    coverage = document["metadata"]["coverage"]
    assert (f"probability mass: completed paths {coverage['completed_mass']:.4f}, "
            f"all leaves {coverage['leaf_mass']:.4f}") in done.stdout
    # logprobs takes the sampler's flags and prints the model's own probability beside the sampler's.
    done = tokentree("logprobs", "Once upon a time", "-q", "--max-new-tokens", "5", "--temperature", "0.5",
                     "--top-k-filter", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(model ") == 5


@pytest.mark.parametrize("args", [["--temperature", "-1"], ["--top-p", "x"], ["--min-p", "2"]])
def test_bad_logprobs_sampler_flags_are_one_line_and_exit_2(args: list[str]) -> None:
    done = tokentree("logprobs", "Once upon a time", "-q", *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("tokentree: error:")


def test_progress_bar_goes_to_stderr() -> None:
    done = tokentree("tree", "Once upon a time")
    assert done.returncode == 0
    assert "expanding" in done.stderr and "frontier" in done.stderr
    assert "expanding" not in done.stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--min-branch-threshold", "1.5"], "min_branch_threshold"),
        (["--max-branch-threshold", "-1"], "max_branch_threshold"),
        (["--min-branch-threshold", "0.6", "--max-branch-threshold", "0.5"], "min_branch_threshold"),
        (["--soft-queue-limit", "0"], "soft_queue_limit"),
        (["--max-depth", "0"], "max_depth"),
        (["--model", "no-such-org/no-such-model"], "no-such-org/no-such-model"),
        (["--model", "./missing-folder"], "missing-folder"),
        (["--max-depth", "many"], "max-depth"),
        (["--quantize", "4bit", "--device", "cpu"], "CUDA"),
        (["--temperature", "0"], "temperature: must be greater than 0"),
        (["--temperature", "nan"], "temperature"),
        (["--top-p", "1.5"], "top_p"),
        (["--min-p", "-0.1"], "min_p"),
        (["--top-k-filter", "-1"], "top_k_filter"),
        (["--top-k-filter", "2.5"], "top-k-filter"),
        (["--max-candidates", "0"], "max_candidates"),
        (["--max-candidates", "101"], "max_candidates"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], field: str) -> None:
    done = tokentree("tree", "Once upon a time", "-q", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tokentree: error:") and field in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("prompt", ["", "   ", "word " * 5000])
def test_bad_prompts(prompt: str) -> None:
    done = tokentree("tree", prompt, "-q")
    assert done.returncode == 2
    assert done.stderr.startswith("tokentree: error: prompt:")
    assert len(done.stderr.strip().splitlines()) == 1


def test_demo_model_prints_a_loadable_folder() -> None:
    done = tokentree("demo-model")
    assert done.returncode == 0
    folder = done.stdout.strip().splitlines()[-1]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "gemma2"


def test_logprobs_appends_jsonl_records(tmp_path: Path) -> None:
    out = tmp_path / "logprobs.jsonl"
    for prompt in ("Once upon a time", "The capital of France is"):
        done = tokentree("logprobs", prompt, "-q", "-o", str(out), "--max-new-tokens", "12", "--top-k", "3")
        assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["Once upon a time", "The capital of France is"]
    assert all(len(step["other_tokens"]) == 3 for r in records for step in r["data"])


SCORE_ROW = re.compile(r"^\s*\d+(!| ) ('.*'|\".*\")\s+(\S+)%\s+(\S+)\s+(\d+)\s+(\S+)\s+(.*)$")


def score_rows(stdout: str) -> list[tuple[bool, str, float, int]]:
    """The printed rows of `tokentree score`: (marked unlikely, token, probability in %, rank)."""
    found = [SCORE_ROW.match(line) for line in stdout.splitlines()]
    return [(m.group(1) == "!", m.group(2), float(m.group(3)), int(m.group(5))) for m in found if m]


def test_score_prints_each_token_marks_the_unlikely_ones_and_appends_the_record(tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    likely, unlikely = ", there was a little fox.", ", there was a little car."
    printed = []
    for text in (likely, unlikely):
        done = tokentree("score", "Once upon a time", "--text", text, "--top-k", "3", "-o", str(out))
        assert done.returncode == 0, done.stderr
        printed.append(done.stdout)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == [likely, unlikely]
    for record, stdout in zip(records, printed, strict=True):
        rows = score_rows(stdout)
        assert [(t[1], t[3]) for t in rows] == [(repr(d["token"]), d["rank"]) for d in record["data"]]
        assert "".join(d["token"] for d in record["data"]) == record["text"]
        assert all(len(d["other_tokens"]) == 3 for d in record["data"])
        assert f"perplexity {record['totals']['text']['perplexity']:.2f}" in stdout
        # A row is marked exactly when the model gave its token under 1%.
        assert [t[0] for t in rows] == [d["prob"] < 1.0 for d in record["data"]]
    assert not any(t[0] for t in score_rows(printed[0]))
    assert any(t[0] and t[1] == "' ca'" for t in score_rows(printed[1])), printed[1]  # " car" stands out
    assert records[1]["totals"]["text"]["perplexity"] > 10 * records[0]["totals"]["text"]["perplexity"]


def test_score_with_chat_a_prefix_and_the_prompts_tokens() -> None:
    done = tokentree("score", "Tell me a story", "--chat", "--prefix", "Once upon a time", "--text",
                     ", there was a fox.", "--include-prompt")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    prompt_rows = [line for line in lines if line.endswith("(prompt)")]
    assert prompt_rows and any("'<start_of_turn>'" in line for line in prompt_rows)
    assert [line.split(":")[0] for line in lines if re.match(r"^(prompt|text): \d+ tokens", line)] == [
        "prompt", "text"]


@pytest.mark.parametrize(("args", "message"), [
    (["hi", "--text", ""], "text: must not be empty"),
    (["hi"], "the following arguments are required: --text"),
    (["  ", "--text", " fox"], "prompt: must not be empty"),
    (["hi", "--text", " fox", "--top-k", "0"], "top_k: must be between 1 and 100"),
    (["hi", "--text", " fox" * 600], "text: is 600 tokens long"),
])
def test_bad_score_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = tokentree("score", *args)
    assert done.returncode == 2
    assert done.stderr.startswith("tokentree: error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_chat_and_prefix(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    done = tokentree("tree", "Tell me a story", "--chat", "--prefix", "Once", "-q", "-o", str(out))
    assert done.returncode == 0, done.stderr
    metadata = json.loads(out.read_text())["metadata"]
    assert metadata["chat"] is True and metadata["prefix"] == "Once"


def ranked_lines(stdout: str) -> list[tuple[float, str]]:
    """The printed paths: (probability, text) in the order printed."""
    found = [re.match(r"\s*\d+\. p=(\S+)  (.*)$", line) for line in stdout.splitlines()]
    return [(float(m.group(1)), m.group(2)) for m in found if m]


def test_printed_paths_show_the_prompt_then_the_prefix() -> None:
    done = tokentree("tree", "Once upon a time", "--prefix", ", there was a dragon", "-q")
    assert done.returncode == 0, done.stderr
    paths = ranked_lines(done.stdout)
    assert len(paths) == 5
    assert all(text.startswith("Once upon a time, there was a dragon") for _, text in paths), done.stdout


def test_unfinished_paths_show_the_prefix_too(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    done = tokentree("tree", "Once upon a time", "--prefix", ", there was a dragon", "--max-depth", "3", "-q",
                     "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "unfinished paths" in done.stdout
    paths = ranked_lines(done.stdout)
    assert paths and all(text.startswith("Once upon a time, there was a dragon") for _, text in paths)
    # The tree JSON: the root is the prompt, the prefix is in the metadata, and a path's text is the prompt,
    # the prefix and the tokens (`engine.tree.response_text`).
    document = json.loads(out.read_text())
    assert document["tree"]["text"] == "Once upon a time"
    assert document["metadata"]["prefix"] == ", there was a dragon"
    best = document["tree"]
    while best["children"]:
        best = max(best["children"], key=lambda c: c["cumulative_prob"])
    assert any(text.endswith(best["text"]) for _, text in paths)


def test_chat_paths_are_printed_apart_from_the_prompt() -> None:
    done = tokentree("tree", "Tell me a story", "--chat", "--prefix", "Once", "--max-depth", "30", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Tell me a story") == 1  # the prompt once, on its own line
    assert "chat prompt: Tell me a story\n" in done.stdout
    paths = ranked_lines(done.stdout)
    assert len(paths) == 5
    assert all(text.startswith("Once ") for _, text in paths), done.stdout  # the response, prefix first


def test_without_completed_paths_the_best_unfinished_ones_are_shown(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    done = tokentree("tree", "Once upon a time", "--max-depth", "5", "-q", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "no path reached a stop token" in done.stdout
    assert "unfinished paths" in done.stdout
    leaves: list[tuple[float, str]] = []
    stack = [(json.loads(out.read_text())["tree"], "Once upon a time")]
    while stack:
        node, text = stack.pop()
        if not node["children"]:
            leaves.append((node["cumulative_prob"], text))
        stack.extend((child, text + child["text"]) for child in node["children"])
    printed = ranked_lines(done.stdout)
    best = sorted(leaves, reverse=True)[: len(printed)]
    assert printed and [(round(p, 6), t) for p, t in best] == printed


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_long_tree_writes_the_partial_tree(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "big.json"
    log = tmp_path / "stderr.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # Parameters for a tree of 100,000 nodes, tens of seconds on a CPU: the signal comes mid-expansion.
    args = ["tree", "Once upon a time", "--min-branch-threshold", "0.01", "--max-branch-threshold", "0.1",
            "--soft-queue-limit", "1000", "--max-depth", "60", "--max-nodes", "100000",
            "--max-completed-paths", "1000000", "-o", str(out)]
    with log.open("w") as stderr:
        # SIGINT at its default in the command even where this test runs as a script's background job
        # (which starts with SIGINT ignored, and the command then rightly keeps ignoring it).
        process = subprocess.Popen([str(Path(sys.executable).parent / "tokentree"), *args], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 120
            # The progress bar shows a thousand nodes: the model is loaded and the expansion well under way.
            while not re.search(r"expanding: \d{4,} nodes", log.read_text()):
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            process.send_signal(sig)
            stdout, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, log.read_text()
    document = json.loads(out.read_text())
    assert document["metadata"]["unfinished"] is True
    nodes = {}
    stack = [(document["tree"], None)]
    while stack:
        node, parent = stack.pop()
        assert node["id"] not in nodes and node["child_count"] == len(node["children"])
        assert parent is None or node["depth"] == nodes[parent]["depth"] + 1
        nodes[node["id"]] = node
        stack.extend((child, node["id"]) for child in node["children"])
    # Ids are 0..n-1 in creation order, a parent before its children: none is missing from the file.
    assert sorted(nodes) == list(range(len(nodes))) == list(range(document["metadata"]["stats"]["nodes"]))
    assert 1000 <= len(nodes) < 100_000
    # Open nodes stay as they were: neither finished nor expanded.
    assert any(not n["is_finished"] and n["threshold"] is None for n in nodes.values())
    assert f"nodes {len(nodes)}" in stdout
    said = log.read_text().strip().splitlines()[-1]
    assert said.startswith(f"tokentree: interrupted ({sig.name})") and str(out) in said


def readme_examples() -> list[list[str]]:
    """The `tokentree tree`, `logprobs` and `score` lines of the README's command-line section that use
    the demo model (no --model), as argument lists."""
    section = (ROOT / "README.md").read_text().split("## The command line", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [c[1:] for c in commands
            if c[:2] in (["tokentree", "tree"], ["tokentree", "logprobs"], ["tokentree", "score"])
            and "--model" not in c]


@pytest.mark.parametrize("args", readme_examples(), ids=lambda args: " ".join(args[:2]))
def test_the_readmes_examples_show_something_on_the_demo_model(args: list[str], tmp_path: Path) -> None:
    if "-o" in args:
        args[args.index("-o") + 1] = str(tmp_path / args[args.index("-o") + 1])
    done = tokentree(*args, "-q")
    assert done.returncode == 0, done.stderr
    if args[0] == "tree":
        assert ranked_lines(done.stdout), done.stdout  # completed paths
    elif args[0] == "score":
        assert len(score_rows(done.stdout)) >= 5 and "text: " in done.stdout, done.stdout  # rows, totals
    else:
        response = done.stdout.split("response: ", 1)[1].split("\n", 1)[0]
        assert len(response.split()) >= 5, done.stdout  # a sentence or more, not an empty answer


def test_stop_token_ends_paths(tmp_path: Path) -> None:
    from tokentree.engine.loading import ModelSpec, load_model

    demo = load_model(ModelSpec())
    period = demo.tokenizer(".", add_special_tokens=False).input_ids[-1]
    out = tmp_path / "t.json"
    done = tokentree("tree", "The secret to happiness is", "-q", "--stop-token", str(period), "-o", str(out))
    assert done.returncode == 0, done.stderr
    stack = [json.loads(out.read_text())["tree"]]
    stops = []
    while stack:
        node = stack.pop()
        if node["finish_reason"] == "stop":
            stops.append(node["token_id"])
        stack.extend(node["children"])
    assert period in stops


def test_prompts_file_builds_every_tree_as_tree_does(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "Once upon a time"}) + "\n\n"
        + json.dumps({"prompt": "The capital of France is", "parameters": {"max_completed_paths": 2},
                      "prefix": " Paris"}) + "\n"
        + json.dumps({"prompt": "Once upon a time", "parameters": {"min_branch_threshold": 0.05}}) + "\n"
    )
    out = tmp_path / "trees.jsonl"
    done = tokentree("tree", "--prompts", str(prompts), "-o", str(out), "--max-depth", "12", "-q")
    assert done.returncode == 0, done.stderr
    documents = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["metadata"]["prompt"] for d in documents] == [
        "Once upon a time", "The capital of France is", "Once upon a time"]
    assert documents[1]["metadata"]["prefix"] == " Paris"
    assert documents[1]["metadata"]["parameters"]["max_completed_paths"] == 2
    assert all(d["metadata"]["parameters"]["max_depth"] == 12 for d in documents)  # the flags are defaults
    nodes = sum(d["metadata"]["stats"]["nodes"] for d in documents)
    assert f"trees 3  nodes {nodes}" in done.stdout
    # The third tree is the one `tokentree tree` builds alone.
    single = tmp_path / "single.json"
    alone = tokentree("tree", "Once upon a time", "--max-depth", "12", "--min-branch-threshold", "0.05",
                      "-q", "-o", str(single))
    assert alone.returncode == 0, alone.stderr
    expected = json.loads(single.read_text())

    def shape(node: dict) -> list:  # type: ignore[type-arg]
        return [node["token_id"], round(node["prob"], 4), [shape(c) for c in node["children"]]]

    assert shape(documents[2]["tree"]) == shape(expected["tree"])


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "a"}', "not json"], "line 2: not JSON"),
        (['{"prompt": "a"}', '{"prompt": "b", "parameters": {"max_nodes": 0}}'], "line 2: max_nodes:"),
        (['{"prompt": "   "}'], "line 1: prompt: must not be empty"),
        (['{"prompt": "a", "temperature": 1}'], "line 1: temperature: unknown key"),
        (['{"prompt": "a", "parameters": {"max_nodez": 3}}'], "line 1: max_nodez: unknown parameter"),
        (['["a"]'], "line 1: each line must be a JSON object"),
        ([""], "no prompts"),
    ],
)
def test_a_bad_prompts_file_is_refused_before_any_work(tmp_path: Path, lines: list[str], message: str
                                                       ) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "trees.jsonl"
    done = tokentree("tree", "--prompts", str(prompts), "-o", str(out))
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_tree_needs_a_prompt_or_a_prompts_file(tmp_path: Path) -> None:
    neither = tokentree("tree")
    assert neither.returncode == 2 and "give a prompt or --prompts" in neither.stderr
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n')
    no_output = tokentree("tree", "--prompts", str(prompts))
    assert no_output.returncode == 2 and "needs -o" in no_output.stderr


def test_an_unreachable_hub_fails_at_once_and_says_what_to_do() -> None:
    """Without HF_HUB_OFFLINE, a Hub id the Hub cannot serve (here: nothing listens at its address) is one
    line and exit 2 within seconds, not a minute of the Hub client's retries."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed}"
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "tokentree"), "tree", "hi", "--model",
                           "no-such-org/no-such-model"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "cannot be reached" in done.stderr and "local model folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 30


def test_a_resolver_that_never_answers_does_not_hold_an_unknown_model(tmp_path: Path) -> None:
    """Offline behind a DNS server that does not answer, the Hub's name never resolves, and a connection's
    timeout does not cover the lookup: the Hub check still gives up in seconds (one line, exit 2)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import socket, time\n"
        "def getaddrinfo(*args, **kwargs):\n"
        "    time.sleep(300)  # a resolver that never answers\n"
        "    raise socket.gaierror(socket.EAI_AGAIN, 'Temporary failure in name resolution')\n"
        "socket.getaddrinfo = getaddrinfo\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env["PYTHONPATH"] = str(tmp_path)
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "tokentree"), "tree", "hi", "--model",
                           "nobody/no-such-model"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "cannot be reached" in done.stderr and "local model folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60


def test_the_hub_check_answers_when_the_connection_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """It waits in a thread (see the test above), but only as long as the connection takes: a refusal is
    an answer at once, not a wait of the whole timeout."""
    from tokentree.engine import loading

    monkeypatch.setattr(loading.hub_constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setattr(loading.hub_constants, "ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert loading.hub_reachable(timeout_s=60)
    started = time.monotonic()
    assert not loading.hub_reachable(timeout_s=60)  # nothing listens there now: refused
    assert time.monotonic() - started < 30


def modules_after(args: list[str], tmp_path: Path, status: int = 0) -> set[str]:
    """The modules `tokentree ARGS` has imported when it returns (with exit status `status`), run in a
    fresh interpreter with the embedded mode's database under `tmp_path`."""
    check = ("import json, sys\nfrom cli.main import main\n"
             "try:\n    status = main(sys.argv[1:])\nexcept SystemExit as exc:\n    status = exc.code\n"
             "print(json.dumps([status, sorted(sys.modules)]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTREE_")}
    env["TOKENTREE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", check, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    returned, modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert returned == status, done.stderr
    return set(modules)


@pytest.mark.parametrize("args", [["--help"], ["models"], ["demo-model"], ["tree", "--help"], ["status"],
                                  ["keys", "list"], ["db", "current"], ["worker", "--help"]])
def test_commands_that_run_no_model_import_no_torch(args: list[str], tmp_path: Path) -> None:
    """They answer in well under a second: torch and transformers alone take seconds to import."""
    loaded = {"torch", "transformers"} & modules_after(args, tmp_path)
    assert not loaded


@pytest.mark.parametrize("args", [["--help"], ["tree", "--help"], ["demo-model"]])
def test_parsing_the_command_line_reads_no_settings(args: list[str], tmp_path: Path) -> None:
    """The settings and the storage they import (pydantic-settings, SQLAlchemy: a few tenths of a second)
    are the service commands' to load, not every command's: not `tree`'s startup, nor `--help`'s."""
    loaded = {"tokentree.models.settings", "pydantic_settings", "sqlalchemy"} & modules_after(args, tmp_path)
    assert not loaded


@pytest.mark.parametrize("args", [["tree", "hi", "--max-depth", "0"], ["tree"], ["tree", "  "],
                                  ["tree", "--prompts", "p.jsonl"], ["logprobs", "hi", "--top-k", "0"],
                                  ["score", "hi", "--text", "x", "--top-k", "0"]])
def test_bad_flags_are_refused_before_torch_is_imported(args: list[str], tmp_path: Path) -> None:
    """A mistake in the flags is told at once, not after the seconds torch and transformers take."""
    loaded = {"torch", "transformers"} & modules_after(args, tmp_path, status=2)
    assert not loaded


def test_the_worker_refuses_a_model_outside_the_allow_list(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTREE_")}
    env["TOKENTREE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([str(Path(sys.executable).parent / "tokentree"), "worker", "--model", "nope"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "tokentree: error: --model nope: not in the allow-list (TOKENTREE_MODELS): demo")


def _options(parser: argparse.ArgumentParser, path: str = "tokentree") -> Iterator[tuple[str, str, str, Any]]:
    """(command, option, the help argparse shows for it, the option's default) for every argument of
    every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            shown = parser._get_formatter()._expand_help(action) if action.help else ""
            yield path, "/".join(action.option_strings) or action.dest, shown, action.default


def test_every_flag_has_help_and_shows_its_default() -> None:
    from tokentree.cli.main import build_parser

    options = list(_options(build_parser()))
    assert len(options) > 40
    for command, option, shown, default in options:
        assert shown, f"{command} {option}: no help"
        if default not in (None, False, [], argparse.SUPPRESS):
            assert "default" in shown, f"{command} {option}: its default {default!r} is not shown"
            if command.split()[-1] in ("tree", "logprobs"):
                assert f"(default {default})" in shown, f"{command} {option}: {shown!r}"


def test_tree_help_explains_every_rule_flag_with_its_default() -> None:
    from tokentree.engine.params import TREE_PARAMETER_HELP, TreeParams

    text = " ".join(tokentree("tree", "--help").stdout.split())  # argparse wraps lines
    for name, meaning in TREE_PARAMETER_HELP.items():
        assert f"--{name.replace('_', '-')}" in text
        assert f"{meaning} (default {getattr(TreeParams(), name)})" in text
