"""Trees, log-probability records and scores built in this process, with the engine `tokentree tree`,
`tokentree logprobs` and `tokentree score` use: the same model loading, the same parameters, the same
documents.

torch and transformers are imported on the first call, not on `import tokentree`: a client of a
service never needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from tokentree.engine.params import LogprobsParams, ParameterError, ScoreParams, TreeParams, check_prompt
from tokentree.progress import NodeProgress
from tokentree.tree import Tree

if TYPE_CHECKING:
    from tokentree.engine.loading import LoadedModel

DType = Literal["auto", "bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda"]
Quantization = Literal["none", "4bit", "8bit"]

DEFAULT_MAX_BATCH = 256  # `tokentree tree --max-batch`'s default


def build_tree(
    prompt: str,
    model: str = "demo",
    *,
    chat: bool = False,
    prefix: str | None = None,
    progress: bool = True,
    dtype: DType = "auto",
    device: Device = "auto",
    quantize: Quantization = "none",
    stop_tokens: Sequence[int] = (),
    max_batch: int = DEFAULT_MAX_BATCH,
    **parameters: Any,
) -> Tree:
    """Expand the token tree of `prompt`, as `tokentree tree` does with the same options.

    `model` is `demo` (bundled), a local Hugging Face folder or a Hub id, loaded once per process.
    `parameters` are the branching rule's and the sampler's (`max_nodes=400`, `temperature=0.7`, ...;
    see `tokentree.TreeParams`); a wrong one raises `ParameterError` before the model is loaded.
    """
    params = TreeParams.from_dict(parameters)
    check_prompt(prompt)
    if max_batch < 1:
        raise ParameterError("max_batch", f"must be at least 1, got {max_batch}")
    from tokentree.engine.analysis import build_tree as expand_tree

    lm = _load(model, dtype, device, quantize, stop_tokens)
    with NodeProgress(progress, "expanding") as bar:
        result = expand_tree(lm, prompt, params, chat=chat, prefix=prefix, max_batch=max_batch,
                             on_progress=lambda p: bar.update(p, f"frontier {p.frontier}, depth {p.depth}"))
    return Tree(result.nodes, result.metadata)


def logprobs(
    prompt: str,
    model: str = "demo",
    *,
    chat: bool = False,
    prefix: str | None = None,
    dtype: DType = "auto",
    device: Device = "auto",
    quantize: Quantization = "none",
    stop_tokens: Sequence[int] = (),
    **parameters: Any,
) -> dict[str, Any]:
    """A greedy generation with each token's log-probability and its most probable rivals: the record
    `tokentree logprobs -o` writes (`prompt`, `response`, `data`, `metadata`). `parameters` are
    `max_new_tokens`, `top_k` and the sampler's `temperature`, `top_k_filter`, `top_p` and `min_p`."""
    params = LogprobsParams.from_dict(parameters)
    check_prompt(prompt)
    from tokentree.engine.analysis import analyze_logprobs

    lm = _load(model, dtype, device, quantize, stop_tokens)
    return analyze_logprobs(lm, prompt, params, chat=chat, prefix=prefix)


def score(
    prompt: str,
    text: str,
    model: str = "demo",
    *,
    chat: bool = False,
    prefix: str | None = None,
    dtype: DType = "auto",
    device: Device = "auto",
    quantize: Quantization = "none",
    **parameters: Any,
) -> dict[str, Any]:
    """How likely the model finds `text` as the continuation of `prompt`, token by token: the record
    `tokentree score -o` writes (`data`: each token's `logprob`, `prob` in percent, `rank`, `entropy` and
    its position's most likely tokens; `totals`: sum and mean log-prob and perplexity). `parameters`
    are `top_k` and `include_prompt` (also score the prompt's tokens after the first)."""
    params = ScoreParams.from_dict(parameters)
    check_prompt(prompt)
    from tokentree.engine.score import score_text

    lm = _load(model, dtype, device, quantize, ())
    return score_text(lm, prompt, text, params, chat=chat, prefix=prefix)


def _load(model: str, dtype: DType, device: Device, quantize: Quantization,
          stop_tokens: Sequence[int]) -> LoadedModel:
    from tokentree.engine.loading import ModelSpec, load_model

    lm = load_model(ModelSpec(name=model, dtype=dtype, device=device, quantization=quantize))
    return lm.with_stop_ids(list(stop_tokens)) if stop_tokens else lm
