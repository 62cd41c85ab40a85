"""The engine's two jobs, end to end: build token trees (one, or many in shared batches), and analyse a
greedy generation's log-probs. Both step the model through the same `ModelRunner`.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
import transformers

from tokentree.engine.expand import (
    DEFAULT_MAX_BATCH,
    BatchProgressCallback,
    Expander,
    ExpansionStats,
    run_trees,
    top_k_for,
)
from tokentree.engine.loading import LoadedModel, encode_prompt
from tokentree.engine.params import LogprobsParams, TreeParams
from tokentree.engine.runner import ModelRunner, Row
from tokentree.engine.sampling import SamplerSettings
from tokentree.engine.scheduler import RankedToken, TreeBuilder
from tokentree.engine.tree import CompletedPath, Node, completed_paths, coverage, tree_json_text


def versions() -> dict[str, str]:
    """The versions a result records."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    # Read once: package metadata is slow to read, and a batch may build thousands of trees.
    try:
        ours = version("tokentree")
    except PackageNotFoundError:
        ours = "unknown"
    return {
        "tokentree": ours,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def model_metadata(lm: LoadedModel) -> dict[str, Any]:
    return {
        "model": lm.spec.name,
        "source": lm.source,
        "dtype": lm.dtype,
        "model_fingerprint": lm.fingerprint,
        "device": str(lm.model.device),
        "stop_token_ids": sorted(lm.stop_ids),
        "versions": versions(),
    }


@dataclass
class TreeResult:
    nodes: list[Node]
    metadata: dict[str, Any]
    stats: ExpansionStats
    completed_paths: list[CompletedPath]
    # False when the expansion was stopped early (`should_stop`) with open nodes left: a partial tree.
    finished: bool = True

    def json_text(self, root_id: int = 0, max_depth: int | None = None) -> str:
        return tree_json_text(self.nodes, self.metadata, root_id, max_depth)


def tree_builder(lm: LoadedModel, prompt: str, prompt_ids: list[int], params: TreeParams) -> TreeBuilder:
    """A builder for this model: its stop tokens, its decoding, and the depth its context allows."""
    depth_limit = None if lm.context_length is None else lm.context_length - len(prompt_ids)
    return TreeBuilder(params, lm.stop_ids, root_text=prompt, decode=lm.decode, depth_limit=depth_limit,
                       token_bytes=lm.token_bytes)


@dataclass(frozen=True)
class TreeRequest:
    """One tree to build: what `tokentree tree` takes for one prompt."""

    prompt: str
    params: TreeParams = field(default_factory=TreeParams)
    chat: bool = False
    prefix: str | None = None


def build_tree(
    lm: LoadedModel,
    prompt: str,
    params: TreeParams,
    *,
    chat: bool = False,
    prefix: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    on_progress: BatchProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TreeResult:
    """Expand the token tree of `prompt` by the branching rule."""
    return build_trees(lm, [TreeRequest(prompt, params, chat, prefix)], max_batch=max_batch,
                       on_progress=on_progress, should_stop=should_stop)[0]


def build_trees(
    lm: LoadedModel,
    requests: Sequence[TreeRequest],
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    on_progress: BatchProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TreeResult]:
    """Expand many trees together, their levels sharing forward passes (and their prompts' KV where the
    prompts are equal); each tree is the one `build_tree` gives. Every prompt is encoded (and checked)
    before any model work starts.

    `should_stop`, asked before every batch, ends the expansion early: each result is then the tree so
    far (`TreeResult.finished` false where open nodes remain)."""
    prompt_ids = [encode_prompt(lm, r.prompt, chat=r.chat, prefix=r.prefix) for r in requests]
    runner = ModelRunner(lm.model, top_k=max((top_k_for(r.params) for r in requests), default=1))
    trees = [Expander(tree_builder(lm, r.prompt, ids, r.params), runner, ids)
             for r, ids in zip(requests, prompt_ids, strict=True)]
    run_trees(trees, max_batch, on_progress, should_stop)
    return [_tree_result(lm, r, ids, tree) for r, ids, tree in zip(requests, prompt_ids, trees, strict=True)]


def _tree_result(lm: LoadedModel, request: TreeRequest, prompt_ids: list[int], tree: Expander) -> TreeResult:
    builder, stats = tree.builder, tree.stats
    metadata = {
        "prompt": request.prompt,
        "parameters": request.params.to_dict(),
        "chat": request.chat,
        "prefix": request.prefix,
        "prompt_token_ids": prompt_ids,
        **model_metadata(lm),
        "stats": {
            "nodes": len(builder.nodes),
            "expanded": builder.expanded,
            "levels": stats.levels,
            "forward_passes": stats.forward_passes,
            "completed_paths": builder.completed,
            "seconds": round(stats.seconds, 4),
        },
        "coverage": coverage(builder.nodes).to_json(),
    }
    return TreeResult(builder.nodes, metadata, stats, completed_paths(builder.nodes, request.prefix),
                      finished=builder.done())


def _logprobs_entry(lm: LoadedModel, token: RankedToken) -> dict[str, Any]:
    """One token of a logprobs record: the seed's `token`, `logprob` and `prob` (a percentage), then the
    model's own `raw_logprob` and `raw_prob`, and `bytes` where the text is not valid UTF-8."""
    entry: dict[str, Any] = {"token": lm.decode(token.token_id), "logprob": token.logprob,
                             "prob": math.exp(token.logprob) * 100.0, "raw_logprob": token.raw_logprob,
                             "raw_prob": math.exp(token.raw_logprob) * 100.0}
    if (token_bytes := lm.token_bytes(token.token_id)) is not None:
        entry["bytes"] = list(token_bytes)
    return entry


def analyze_logprobs(
    lm: LoadedModel,
    prompt: str,
    params: LogprobsParams,
    *,
    chat: bool = False,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Greedy generation recording each token's log-probability and its top-k rivals.

    Returns one record in the seed's JSONL layout; `prob` is a percentage (0-100) as the seed wrote it.
    The stop token, when reached, is recorded too (its probability is part of the story) but left out
    of `response`. `prob`/`logprob` are the sampler's (the greedy choice is made on them), `raw_prob`/
    `raw_logprob` the model's own; a token not valid UTF-8 on its own carries its `bytes`.
    """
    prompt_ids = encode_prompt(lm, prompt, chat=chat, prefix=prefix)
    runner = ModelRunner(lm.model, top_k=params.top_k)
    sampler = SamplerSettings.of(params)
    budget = params.max_new_tokens
    if lm.context_length is not None:
        budget = min(budget, lm.context_length - len(prompt_ids))
    prompt_kv = runner.prompt(prompt_ids)
    dist = runner.distribution(prompt_kv, sampler=sampler)
    last = None  # the KV handle of the last generated token
    generated: list[int] = []
    data = []
    while True:
        ranked = dist.ranked()
        token_id = ranked[0].token_id
        generated.append(token_id)
        data.append({**_logprobs_entry(lm, ranked[0]),
                     # tokens the sampler filtered out (logprob -inf) are no alternatives
                     "other_tokens": [_logprobs_entry(lm, r) for r in ranked if math.isfinite(r.logprob)]})
        if token_id in lm.stop_ids or len(generated) >= budget:
            break
        dists, nodes = runner.step([Row(prompt_kv, last, [token_id], sampler)])
        dist, last = dists[0], nodes[0]
    text_ids = [t for t in generated if t not in lm.stop_ids]
    response = (prefix or "") + str(lm.tokenizer.decode(text_ids, skip_special_tokens=True))
    return {
        "prompt": prompt,
        "response": response,
        "data": data,
        "metadata": {"parameters": params.to_dict(), "chat": chat, "prefix": prefix, **model_metadata(lm)},
    }
