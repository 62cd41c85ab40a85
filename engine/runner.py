"""Runs the model: batched forward passes over equal-length prefixes, with KV caches reused.

Tree expansion advances level by level, so every row of a batch has the same length and needs no
padding or attention mask. A node's KV cache is its parent's cache plus one token: `step` gathers the
parents' cache rows (the way beam search reorders its cache), feeds each row its node's token, and
keeps the result for the node's own children. Only the top-k of each distribution leaves the device.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Cache, DynamicCache, PreTrainedModel

from engine.scheduler import Distribution


@dataclass(frozen=True)
class CacheRow:
    """Where a node's KV cache lives: one row of a batch's cache."""

    cache: Cache
    row: int


def gather_rows(rows: Sequence[CacheRow]) -> Cache:
    """A new cache whose row i is `rows[i]`; the source caches are left untouched.

    Rows usually come from one or a few batches of the previous level, so runs from the same source
    are gathered with one `index_select` each.
    """
    # Group consecutive rows by source cache to keep one index_select per run.
    runs: list[tuple[Cache, list[int]]] = []
    for item in rows:
        if runs and runs[-1][0] is item.cache:
            runs[-1][1].append(item.row)
        else:
            runs.append((item.cache, [item.row]))
    template = runs[0][0]
    gathered = copy.copy(template)
    gathered.layers = []
    for layer_index, template_layer in enumerate(template.layers):
        layer: Any = copy.copy(template_layer)  # a DynamicLayer or DynamicSlidingWindowLayer
        keys, values = [], []
        for source, indices in runs:
            src: Any = source.layers[layer_index]
            index = torch.tensor(indices, device=src.keys.device)
            keys.append(src.keys.index_select(0, index))
            values.append(src.values.index_select(0, index))
        layer.keys = keys[0] if len(keys) == 1 else torch.cat(keys)
        layer.values = values[0] if len(values) == 1 else torch.cat(values)
        gathered.layers.append(layer)
    return gathered


class ModelRunner:
    """Turns token prefixes into next-token distributions, `top_k` tokens each."""

    def __init__(self, model: PreTrainedModel, top_k: int) -> None:
        self.model = model
        self.device = model.device
        self.top_k = min(top_k, int(model.config.get_text_config().vocab_size))
        self.forward_passes = 0
        # transformers 5 renamed `past_key_values` to `cache`; accept either spelling.
        forward_params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"

    @torch.inference_mode()
    def prefill(self, prefixes: Sequence[Sequence[int]]) -> tuple[list[Distribution], Cache]:
        """Evaluate whole prefixes of equal length; returns their distributions and a fresh cache."""
        input_ids = torch.tensor([list(p) for p in prefixes], device=self.device)  # [B, L]
        cache = DynamicCache(config=self.model.config)
        return self._forward(input_ids, cache), cache

    @torch.inference_mode()
    def step(self, parents: Sequence[CacheRow], token_ids: Sequence[int]) -> tuple[list[Distribution], Cache]:
        """Extend each parent row by one token; returns the distributions and the extended cache."""
        cache = gather_rows(parents)
        input_ids = torch.tensor(token_ids, device=self.device).unsqueeze(1)  # [B, 1]
        return self._forward(input_ids, cache), cache

    def _forward(self, input_ids: torch.Tensor, cache: Cache) -> list[Distribution]:
        self.forward_passes += 1
        kwargs = {self._cache_kwarg: cache}
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **kwargs)
        logits = out.logits[:, -1, :].float()  # [B, V]; softmax in fp32 whatever the model's dtype
        return reduce_logits(logits, self.top_k)


def reduce_logits(logits: torch.Tensor, top_k: int) -> list[Distribution]:
    """[B, V] logits -> B distributions of their top_k tokens, with one transfer to the host."""
    logprobs = torch.log_softmax(logits, dim=-1)  # [B, V]
    probs = logprobs.exp()
    entropy = torch.special.entr(probs).sum(dim=-1)  # [B]; entr(0) = 0, no nan from 0 * -inf
    top_probs, top_ids = probs.topk(top_k, dim=-1)  # [B, k]
    top_logprobs = logprobs.gather(-1, top_ids)
    ids, p, lp, ent = (
        t.cpu().tolist() for t in (top_ids, top_probs.double(), top_logprobs.double(), entropy)
    )
    return [
        Distribution(token_ids=ids[b], probs=p[b], logprobs=lp[b], entropy=ent[b]) for b in range(len(ids))
    ]
