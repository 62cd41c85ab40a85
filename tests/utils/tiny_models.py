"""Tiny random causal LMs of several architectures, saved as Hugging Face folders, for engine tests.

Random weights give near-uniform distributions over the vocabulary, so the output head is scaled up
until a few tokens per step clear a branching threshold, the way a trained model's do.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    GenerationConfig,
    LlamaConfig,
)

from engine.loading import DEMO_MODEL_DIR

ARCHITECTURES = ("gemma2", "gemma3", "llama")
OUTPUT_SCALE = 25.0  # measured: the top token then holds 0.3-0.5 of the mass, with 2-3 rivals above 0.05


def _config(architecture: str, vocab_size: int, bos: int, eos: int, pad: int):  # type: ignore[no-untyped-def]
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
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


def make_tiny_model(folder: Path, architecture: str, seed: int = 0) -> Path:
    """Save a random model of `architecture` that shares the demo model's tokenizer into `folder`."""
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    config = _config(
        architecture, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(OUTPUT_SCALE)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
