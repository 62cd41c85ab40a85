"""Scoring a given text: the teacher-forced log-probability of each of its tokens as the continuation of
a prompt, with its rank in the model's distribution, that distribution's entropy and its top-k tokens.

The invariant: the scored sequence is the prompt's ids as every job kind makes them (`encode_prompt`: the
chat template and a forced prefix included) followed by TEXT's own ids, TEXT tokenized alone without
special tokens, the way a forced prefix is appended. Token i of the sequence gets the figures of the
model's distribution after tokens 0..i-1, as one forward pass over the whole sequence gives them. The
sequence is evaluated once, in chunks (`ModelRunner.each_position`), and each chunk's logits are reduced
on the device: only the figures below leave it, never a [positions, vocabulary] tensor, and at most one
chunk's logits exist at a time.

A token's rank is 1 + the number of tokens with a higher log-probability, or an equal one and a smaller
token id, in the model's own distribution (whatever the sampler settings): its place in the distribution
sorted as the alternatives are listed (most likely first, ties by token id). Rank 1 is the greedy
choice, and a token of rank r <= top_k is the r-th alternative.

The record is the seed's log-probs JSONL layout (`analyze_logprobs`; `prob` in percent) plus, per token,
`token_id`, `rank`, `entropy` and `part` ("prompt" or "text"), and `totals` for the text (and for the
prompt when it is scored too): token count, sum and mean log-probability, and perplexity
(exp(-mean logprob)). As in a logprobs record, `logprob`/`prob` are the sampler's (engine/sampling.py)
and `raw_logprob`/`raw_prob` the model's own, equal with default settings; `entropy` is the sampler's
distribution's (as a tree node's), `raw_entropy` the model's. A token the sampler filters out has
`logprob` null and `prob` 0, and the text's processed totals are then null (`filtered` counts such
tokens); the `raw_` totals are always there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from tokentree.engine.analysis import model_metadata
from tokentree.engine.loading import LoadedModel, encode_prompt
from tokentree.engine.params import ParameterError, ScoreParams
from tokentree.engine.runner import ModelRunner
from tokentree.engine.sampling import SamplerSettings, processed_logprobs

Part = Literal["prompt", "text"]


@dataclass(frozen=True)
class Figure:
    """A token's log-probability after the sampler (-inf: filtered out) and the model's own."""

    token_id: int
    logprob: float
    raw_logprob: float


@dataclass(frozen=True)
class TokenFigures:
    """What scoring found for one token: its log-probabilities, its rank, its position's entropies, and
    the position's `top_k` most likely tokens (best first, ties by token id)."""

    token: Figure
    rank: int
    entropy: float  # of the sampler's distribution
    raw_entropy: float  # of the model's
    top: list[Figure]


def figures_of(logits: torch.Tensor, targets: torch.Tensor, top_k: int,
               sampler: SamplerSettings) -> list[TokenFigures]:
    """[n, V] logits of n positions and the [n] tokens that followed them -> each token's figures, with one
    transfer to the host."""
    raw = torch.log_softmax(logits.float(), dim=-1)  # [n, V]
    processed = raw if sampler.is_identity else processed_logprobs(logits.float(), sampler)  # [n, V]
    chosen = raw.gather(-1, targets[:, None])  # [n, 1]
    vocab = torch.arange(raw.shape[-1], device=raw.device)[None, :]  # [1, V]
    ahead = (raw > chosen) | ((raw == chosen) & (vocab < targets[:, None]))  # [n, V]
    ranks = 1 + ahead.sum(dim=-1)  # [n]
    raw_entropy = torch.special.entr(raw.exp()).sum(dim=-1)  # [n]; entr(0) = 0
    entropy = raw_entropy if processed is raw else torch.special.entr(processed.exp()).sum(dim=-1)
    top_raw, top_ids = raw.topk(min(top_k, raw.shape[-1]), dim=-1)  # [n, k]; the sampler keeps the order
    host = [t.cpu().tolist() for t in (
        targets, processed.gather(-1, targets[:, None])[:, 0].double(), chosen[:, 0].double(), ranks,
        entropy.double(), raw_entropy.double(), top_ids, processed.gather(-1, top_ids).double(),
        top_raw.double())]
    return [
        TokenFigures(token=Figure(target, logprob, raw_logprob), rank=rank, entropy=ent, raw_entropy=raw_ent,
                     top=sorted((Figure(*t) for t in zip(ids, lps, raw_lps, strict=True)),
                                key=lambda f: (-f.raw_logprob, f.token_id)))
        for target, logprob, raw_logprob, rank, ent, raw_ent, ids, lps, raw_lps in zip(*host, strict=True)
    ]


def text_ids(lm: LoadedModel, text: str) -> list[int]:
    """TEXT's own token ids, without special tokens (as a forced prefix is tokenized). Whitespace is a
    text like any other ("\n\n": how likely a paragraph break is); only a text of no tokens is refused."""
    ids = list(lm.tokenizer(text, add_special_tokens=False).input_ids)
    if not ids:
        raise ParameterError("text", "must not be empty")
    return ids


def score_text(
    lm: LoadedModel,
    prompt: str,
    text: str,
    params: ScoreParams,
    *,
    chat: bool = False,
    prefix: str | None = None,
    chunk: int | None = None,
) -> dict[str, Any]:
    """The record of TEXT scored as the continuation of `prompt` (see the module's docstring). `chunk`
    bounds the positions evaluated per forward pass (the runner's default when None)."""
    prompt_ids = encode_prompt(lm, prompt, chat=chat, prefix=prefix)
    scored_ids = text_ids(lm, text)
    sequence = prompt_ids + scored_ids
    if lm.context_length is not None and len(sequence) > lm.context_length:
        room = lm.context_length - len(prompt_ids)
        raise ParameterError("text", f"is {len(scored_ids)} tokens long; after the prompt's "
                                     f"{len(prompt_ids)} the model's context holds {room}")
    # Token i is scored from the logits at position i - 1; the last token is never input.
    first = 1 if params.include_prompt else len(prompt_ids)
    runner = ModelRunner(lm.model, top_k=params.top_k)
    targets = torch.tensor(sequence)
    sampler = SamplerSettings.of(params)

    def reduce(position: int, logits: torch.Tensor) -> list[TokenFigures]:
        # [n] on the logits' device: a model spread over GPUs gives them on its last one.
        followed_by = targets[position + 1 : position + 1 + logits.shape[0]].to(logits.device)
        return figures_of(logits, followed_by, params.top_k, sampler)

    chunks = runner.each_position(sequence[:-1], first - 1, reduce, chunk)
    found = [figures for part in chunks for figures in part]
    data = [_token_json(lm, f, "prompt" if first + i < len(prompt_ids) else "text")
            for i, f in enumerate(found)]
    parts: list[Part] = ["prompt", "text"] if params.include_prompt else ["text"]  # in the sequence's order
    totals = {part: _totals([f for f, d in zip(found, data, strict=True) if d["part"] == part])
              for part in parts}
    return {
        "prompt": prompt,
        "response": (prefix or "") + text,
        "text": text,
        "data": data,
        "totals": totals,
        "metadata": {"kind": "score", "parameters": params.to_dict(), "chat": chat, "prefix": prefix,
                     "prompt_token_ids": prompt_ids, "text_token_ids": scored_ids, **model_metadata(lm)},
    }


def _figure_json(lm: LoadedModel, figure: Figure) -> dict[str, Any]:
    """A token as a logprobs record gives it (`token`, `logprob`, `prob` in percent, `raw_logprob`,
    `raw_prob`, `bytes` where its text is not valid UTF-8) with its `token_id`; a `logprob` the sampler
    made -inf is null (JSON has no infinity)."""
    filtered = math.isinf(figure.logprob)
    entry: dict[str, Any] = {
        "token": lm.decode(figure.token_id), "token_id": figure.token_id,
        "logprob": None if filtered else figure.logprob,
        "prob": 0.0 if filtered else math.exp(figure.logprob) * 100.0,  # a percentage, as the seed wrote it
        "raw_logprob": figure.raw_logprob, "raw_prob": math.exp(figure.raw_logprob) * 100.0,
    }
    if (token_bytes := lm.token_bytes(figure.token_id)) is not None:
        entry["bytes"] = list(token_bytes)
    return entry


def _token_json(lm: LoadedModel, figures: TokenFigures, part: Part) -> dict[str, Any]:
    return {
        **_figure_json(lm, figures.token),
        "rank": figures.rank,
        "entropy": figures.entropy,
        "raw_entropy": figures.raw_entropy,
        "part": part,
        # tokens the sampler filtered out are no alternatives (as in a logprobs record)
        "other_tokens": [_figure_json(lm, f) for f in figures.top if not math.isinf(f.logprob)],
    }


def _totals(found: list[TokenFigures]) -> dict[str, Any]:
    """Token count, sum and mean log-probability and perplexity (exp(-mean)) of the tokens `found`: the
    sampler's (null where it filtered a token out; `filtered` counts those) and the model's own."""
    filtered = sum(1 for f in found if math.isinf(f.token.logprob))
    totals: dict[str, Any] = {"tokens": len(found), "filtered": filtered}
    figures = (("", [f.token.logprob for f in found]), ("raw_", [f.token.raw_logprob for f in found]))
    for key, values in figures:
        finite = not any(math.isinf(v) for v in values)
        total = math.fsum(values) if finite else None
        mean = None if total is None or not values else total / len(values)
        totals[f"{key}sum_logprob"] = total
        totals[f"{key}mean_logprob"] = mean
        totals[f"{key}perplexity"] = None if mean is None else _perplexity(mean)
    return totals


def _perplexity(mean_logprob: float) -> float | None:
    """exp(-mean logprob); None beyond a float's range (JSON has no infinity)."""
    try:
        return math.exp(-mean_logprob)
    except OverflowError:
        return None
