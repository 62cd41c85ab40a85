"""A plain sampler for the reference trees (bench/reference.py's `warp`): transformers' four warpers in
the order `generate` applies them, on one node's logits. Written apart from engine/sampling.py on purpose
(a bug there must not be hidden by the same bug here); on real logits top-p meets no ties, so the engine's
tie rule does not show, and tests/engine/test_sampling.py checks that rule on hand-made logits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def plain_sampler(temperature: float = 1.0, top_k_filter: int = 0, top_p: float = 1.0,
                  min_p: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """[V] logits -> [V] probabilities after the warpers that are switched on."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k_filter:
        warpers.append(TopKLogitsWarper(top_k_filter))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    if min_p > 0.0:
        warpers.append(MinPLogitsWarper(min_p))

    def warp(logits: torch.Tensor) -> torch.Tensor:
        scores = warpers(torch.zeros((1, 0), dtype=torch.long), logits[None, :].clone())
        return torch.softmax(scores[0], dim=-1)

    return warp
