"""Model loading and prompt encoding: the errors a user meets are clear."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokentree.engine import DEMO_MODEL_DIR
from tokentree.engine.loading import ModelLoadError, ModelSpec, encode_prompt, load_model, resolve_source
from tokentree.engine.params import ParameterError


def test_unknown_hub_id_fails_with_one_line_offline() -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model(ModelSpec(name="no-such-org/no-such-model"))
    assert "no-such-org/no-such-model" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_folder_is_named() -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_source("./not/here")


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantization_without_cuda_is_a_clear_error(quantization: str) -> None:
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_model(ModelSpec(name="demo", device="cpu", quantization=quantization))  # type: ignore[arg-type]


def test_empty_and_too_long_prompts(demo) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError, match="empty"):
        encode_prompt(demo, "   ")
    with pytest.raises(ParameterError) as caught:
        encode_prompt(demo, "word " * 5000)
    assert caught.value.field == "prompt" and "context" in caught.value.message


def test_chat_template_wraps_the_prompt(demo) -> None:  # type: ignore[no-untyped-def]
    ids = encode_prompt(demo, "Tell me a story", chat=True)
    text = demo.tokenizer.decode(ids)
    assert "Tell me a story" in text
    assert text != demo.tokenizer.decode(encode_prompt(demo, "Tell me a story"))


def test_stop_ids_include_generation_config_eos(demo) -> None:  # type: ignore[no-untyped-def]
    eos = demo.model.generation_config.eos_token_id
    expected = set(eos) if isinstance(eos, list) else {eos}
    assert expected | {demo.tokenizer.eos_token_id} <= demo.stop_ids


def test_extra_stop_ids_never_reach_the_shared_model() -> None:
    shared = load_model(ModelSpec(name="demo"))
    before = shared.stop_ids
    extra = next(i for i in range(100) if i not in before)
    mine = shared.with_stop_ids([extra])
    assert extra in mine.stop_ids and mine.model is shared.model
    assert extra not in load_model(ModelSpec(name="demo")).stop_ids and shared.stop_ids == before


def test_a_models_fingerprint_names_what_it_computes(tmp_path: Path) -> None:
    """Equal for the same weights loaded from anywhere; different for other weights or another dtype."""
    demo = load_model(ModelSpec(name="demo"))
    copy = tmp_path / "demo-copy"
    shutil.copytree(DEMO_MODEL_DIR, copy)
    assert load_model(ModelSpec(name=str(copy))).fingerprint == demo.fingerprint  # where it was loaded from
    assert load_model(ModelSpec(name="demo", dtype="bf16")).fingerprint != demo.fingerprint
    changed = tmp_path / "demo-changed"
    shutil.copytree(DEMO_MODEL_DIR, changed)
    model = AutoModelForCausalLM.from_pretrained(changed)
    with torch.no_grad():
        first = next(iter(model.parameters()))
        first.view(-1)[0] += 1.0  # one element of the first tensor sampled
    model.save_pretrained(changed)
    assert load_model(ModelSpec(name=str(changed))).fingerprint != demo.fingerprint
