"""The bundled demo model gives trees worth looking at, offline."""

from __future__ import annotations

import json

import pytest

from tokentree.engine.analysis import build_tree
from tokentree.engine.loading import DEMO_MODEL_DIR
from tokentree.engine.params import TreeParams


def test_demo_model_is_small_and_complete() -> None:
    files = {p.name for p in DEMO_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= files
    assert sum(p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()) < 8 * 2**20
    config = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["Gemma2ForCausalLM"]


@pytest.mark.parametrize("prompt", ["Once upon a time", "The secret to happiness is"])
def test_generic_prompts_branch_and_complete(demo, prompt: str) -> None:  # type: ignore[no-untyped-def]
    result = build_tree(demo, prompt, TreeParams())
    forks = [n for n in result.nodes if len(n.children) > 1]
    assert len(forks) >= 3
    assert len(result.completed_paths) == 5
    assert len({p.text for p in result.completed_paths}) == 5


def test_prompt_ids_start_with_bos(demo) -> None:  # type: ignore[no-untyped-def]
    from tokentree.engine.loading import encode_prompt

    ids = encode_prompt(demo, "Once upon a time")
    assert ids[0] == demo.tokenizer.bos_token_id
    assert ids == demo.tokenizer("Once upon a time").input_ids
