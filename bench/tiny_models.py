"""Tiny random causal LMs of several architectures, saved as Hugging Face folders: the engine's tests
run on them (tests/conftest.py), and the benchmarks on heavier ones (bench/engine_scaling.py).

Random weights give near-uniform distributions over the vocabulary, so the output head is scaled up
until a few tokens per step clear a branching threshold, the way a trained model's do.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    GenerationConfig,
    LlamaConfig,
    PretrainedConfig,
)

from tokentree.engine.loading import DEMO_MODEL_DIR

ARCHITECTURES = ("gemma2", "gemma3", "llama")
# The output head is scaled until the top token holds about this much of the mass on average: then a
# few rivals per step clear low thresholds, as with a trained model. Calibrated, because the right scale
# depends on the vocabulary and the random draw.
TARGET_TOP_PROB = 0.45
CALIBRATION_PROMPTS = ("Once upon a time there was", "The secret to happiness is", "In the beginning")


def _config(architecture: str, vocab_size: int, bos: int, eos: int, pad: int, width: int,
            layers: int, context: int) -> PretrainedConfig:
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=width // 2,
        max_position_embeddings=context,
        tie_word_embeddings=False,  # tied, a random head mostly predicts the input token back
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    if architecture == "gemma2":
        return Gemma2Config(**common, sliding_window=8)
    if architecture == "gemma3":
        return Gemma3TextConfig(**common, sliding_window=8)
    if architecture == "llama":
        return LlamaConfig(**common)
    raise ValueError(architecture)


@torch.no_grad()
def _sharpen(model: torch.nn.Module, prompts: list[list[int]]) -> None:
    """Scale the output head until the mean top-1 probability reaches the target: the first crossing on a
    log grid, refined by bisection, or the sharpest scale if none reaches it. (Gemma-2's final logit
    soft-capping flattens the top again at large scales: the mean is not monotonic in the scale.)"""
    head = model.get_output_embeddings().weight  # type: ignore[operator]
    original = head.clone()

    def mean_top(scale: float) -> float:
        head.copy_(original * scale)
        tops = [model(torch.tensor([ids])).logits[0, -1].softmax(-1).max().item() for ids in prompts]
        return sum(tops) / len(tops)

    grid = [1.0 * 1.25**i for i in range(1, 29)]  # 1.25 .. about 500
    best = 1.0, 0.0
    for below, scale in itertools.pairwise([1.0, *grid]):
        top = mean_top(scale)
        if top > TARGET_TOP_PROB:
            low, high = below, scale
            break
        best = max(best, (scale, top), key=lambda b: b[1])
    else:  # never sharp enough (a wide random model under soft-capping): the sharpest scale seen
        head.copy_(original * best[0])
        return
    for _ in range(8):
        scale = (low * high) ** 0.5
        if mean_top(scale) > TARGET_TOP_PROB:
            high = scale
        else:
            low = scale
    head.copy_(original * low)


def make_tiny_model(folder: Path, architecture: str, seed: int = 0, width: int = 32, layers: int = 2,
                    context: int = 256, vocab_size: int | None = None) -> Path:
    """Save a random model of `architecture` that shares the demo model's tokenizer into `folder`
    (`width`, `layers` and `context` make it heavier, for benchmarks; `vocab_size`, when larger than the
    tokenizer's, gives it a real model's output width: the extra ids decode to nothing)."""
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    config = _config(
        architecture, max(len(tokenizer), vocab_size or 0), tokenizer.bos_token_id, tokenizer.eos_token_id,
        tokenizer.pad_token_id, width, layers, context,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    _sharpen(model, [tokenizer(p).input_ids for p in CALIBRATION_PROMPTS])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
