"""Sampler settings: what a sampler does to the model's next-token distribution before anything picks
from it (temperature, then the top-k, top-p and min-p filters, in the order transformers' `generate`
applies them), and the distribution it leaves.

The invariant: `processed_logprobs` is transformers' own warpers applied to the logits, with one
correction: tokens tied with the last token top-p keeps are kept too. transformers' top-p sorts the
logits, and which of several equal logits falls on which side of the boundary depends on the sort's
order (not fixed across devices or batch compositions); keeping every tied token makes the result
depend on the logits alone, as top-k and min-p already do (they keep ties at their boundaries).
Default settings change nothing, and then nothing is computed at all (`is_identity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tokentree.engine.params import SAMPLER_PARAMETERS, check_bounds

# The warpers' `input_ids` argument: none of these four reads it.
_NO_INPUT_IDS = cast(torch.LongTensor, torch.empty((0, 0), dtype=torch.long))


@dataclass(frozen=True)
class SamplerSettings:
    """Temperature and the three filters (SAMPLER_PARAMETERS: their meanings and ranges). Checked on
    creation, as a transformers LogitsProcessor checks its arguments: `ParameterError` names the field."""

    temperature: float = 1.0
    top_k_filter: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        check_bounds(self, SAMPLER_PARAMETERS)

    @classmethod
    def of(cls, params: Any) -> SamplerSettings:
        """The settings a job's parameters (`TreeParams`, `LogprobsParams`) carry."""
        return cls(**{name: getattr(params, name) for name in SAMPLER_PARAMETERS})

    @property
    def is_identity(self) -> bool:
        """Whether these settings leave every distribution as the model gives it."""
        return self.temperature == 1.0 and self.top_k_filter == 0 and self.top_p >= 1.0 and self.min_p <= 0.0


def processed_logprobs(logits: torch.Tensor, settings: SamplerSettings) -> torch.Tensor:
    """[B, V] logits -> [B, V] log-probabilities after the sampler (-inf for the tokens it filters out)."""
    scores = logits
    if settings.temperature != 1.0:
        scores = TemperatureLogitsWarper(float(settings.temperature))(_NO_INPUT_IDS, scores)
    if settings.top_k_filter > 0:
        scores = TopKLogitsWarper(settings.top_k_filter)(_NO_INPUT_IDS, scores)
    if settings.top_p < 1.0:
        kept = TopPLogitsWarper(settings.top_p)(_NO_INPUT_IDS, scores)
        # The lowest score kept, per row; every token scoring as much stays (see the module docstring).
        floor = torch.where(kept.isfinite(), scores, torch.inf).amin(dim=-1, keepdim=True)  # [B, 1]
        scores = torch.where(scores >= floor, scores, kept)
    if settings.min_p > 0.0:
        scores = MinPLogitsWarper(float(settings.min_p))(_NO_INPUT_IDS, scores)
    return torch.log_softmax(scores, dim=-1)


def processed_rows(logits: torch.Tensor, raw_logprobs: torch.Tensor,
                   settings: Sequence[SamplerSettings]) -> torch.Tensor:
    """[B, V] logits, whose rows may each have their own settings -> [B, V] processed log-probabilities.

    Rows are grouped by settings, each group processed in one call on the device. `raw_logprobs` (the
    logits' log_softmax) is returned as it is when every row's settings are the identity."""
    groups: dict[SamplerSettings, list[int]] = {}
    for row, setting in enumerate(settings):
        if not setting.is_identity:
            groups.setdefault(setting, []).append(row)
    if not groups:
        return raw_logprobs
    out = raw_logprobs.clone()
    for setting, rows in groups.items():
        index = torch.tensor(rows, device=logits.device)
        out[index] = processed_logprobs(logits[index], setting)
    return out
