"""Scoring a text against a fresh full forward pass over prompt + text with plain transformers: every
token's log-probability (within 1e-4), its rank (exactly), its position's entropy and top-k, alone, with
the prompt's tokens, in chat mode, and in chunks smaller than the sequence and than a sliding window."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.engine.plain_sampler import plain_sampler
from tokentree.engine.loading import LoadedModel, ModelSpec, encode_prompt, load_model
from tokentree.engine.params import ParameterError, ScoreParams
from tokentree.engine.runner import POSITION_LOGITS_ELEMENTS, ModelRunner
from tokentree.engine.score import score_text

TOLERANCE = 1e-4


def reference(lm: LoadedModel, ids: list[int], first: int, top_k: int) -> list[dict[str, object]]:
    """Tokens first.. of `ids` scored from one plain forward pass over all of them (the model's own
    attention, no KV cache): logprob, rank (1 + tokens with a higher log-prob, or an equal one and a
    smaller id), entropy and the top-k ids."""
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.model.device)).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    found = []
    for i in range(first, len(ids)):
        row, token = logprobs[i - 1], ids[i]
        chosen = row[token]
        tied_before = (row == chosen) & (torch.arange(row.shape[0]) < token)
        ahead = int((row > chosen).sum()) + int(tied_before.sum())
        order = sorted(range(row.shape[0]), key=lambda t: (-float(row[t]), t))[:top_k]
        found.append({"token_id": token, "logprob": float(chosen), "rank": 1 + ahead,
                      "entropy": float(torch.special.entr(row.exp()).sum()), "top": order})
    return found


def assert_matches(record: dict[str, object], expected: list[dict[str, object]]) -> None:
    data = record["data"]
    assert isinstance(data, list) and len(data) == len(expected)
    for got, want in zip(data, expected, strict=True):
        assert got["token_id"] == want["token_id"]
        assert got["logprob"] == pytest.approx(want["logprob"], abs=TOLERANCE)
        assert got["prob"] == pytest.approx(math.exp(got["logprob"]) * 100.0)
        assert got["rank"] == want["rank"]
        assert got["entropy"] == pytest.approx(want["entropy"], abs=TOLERANCE)
        assert [o["token_id"] for o in got["other_tokens"]] == want["top"]


@pytest.mark.parametrize("chunk", [None, 3])
def test_text_scores_equal_a_full_forward_pass(demo: LoadedModel, chunk: int | None) -> None:
    prompt, text = "Once upon a time", ", there was a little car who lived in the forest."
    record = score_text(demo, prompt, text, ScoreParams(top_k=4), chunk=chunk)
    prompt_ids = encode_prompt(demo, prompt)
    text_ids = list(demo.tokenizer(text, add_special_tokens=False).input_ids)
    assert record["metadata"]["text_token_ids"] == text_ids
    assert_matches(record, reference(demo, prompt_ids + text_ids, len(prompt_ids), 4))
    assert {d["part"] for d in record["data"]} == {"text"}
    assert "".join(d["token"] for d in record["data"]) == text
    # " car" is far from what the model expects after "a little": ranked low, under 1%.
    assert max(d["rank"] for d in record["data"]) > 100
    totals = record["totals"]["text"]
    logprobs = [d["logprob"] for d in record["data"]]
    assert totals["tokens"] == len(text_ids)
    assert totals["sum_logprob"] == pytest.approx(math.fsum(logprobs))
    assert totals["mean_logprob"] == pytest.approx(math.fsum(logprobs) / len(logprobs))
    assert totals["perplexity"] == pytest.approx(math.exp(-totals["mean_logprob"]))
    assert record["response"] == text and record["prompt"] == prompt


def test_include_prompt_scores_the_prompts_tokens_after_the_first(demo: LoadedModel) -> None:
    prompt, text = "The cat sat on the", " mat."
    record = score_text(demo, prompt, text, ScoreParams(top_k=3, include_prompt=True), chunk=2)
    prompt_ids = encode_prompt(demo, prompt)
    ids = prompt_ids + list(demo.tokenizer(text, add_special_tokens=False).input_ids)
    assert_matches(record, reference(demo, ids, 1, 3))
    parts = [d["part"] for d in record["data"]]
    assert parts == ["prompt"] * (len(prompt_ids) - 1) + ["text"] * (len(ids) - len(prompt_ids))
    assert record["totals"]["prompt"]["tokens"] == len(prompt_ids) - 1
    assert record["totals"]["text"]["tokens"] == len(ids) - len(prompt_ids)


def test_chat_scores_the_text_as_the_response(demo: LoadedModel) -> None:
    prompt, prefix, text = "Tell me a story", "Once upon a time", ", there was a fox."
    record = score_text(demo, prompt, text, ScoreParams(top_k=2), chat=True, prefix=prefix)
    prompt_ids = encode_prompt(demo, prompt, chat=True, prefix=prefix)
    assert demo.tokenizer.decode(prompt_ids).endswith("<start_of_turn>model\nOnce upon a time")
    ids = prompt_ids + list(demo.tokenizer(text, add_special_tokens=False).input_ids)
    assert_matches(record, reference(demo, ids, len(prompt_ids), 2))
    assert record["response"] == prefix + text
    assert record["metadata"]["chat"] is True and record["metadata"]["prefix"] == prefix


@pytest.mark.parametrize("architecture", ["gemma2", "gemma3", "llama"])
def test_chunks_across_sliding_windows_equal_a_full_forward_pass(tiny_model_dirs, architecture: str) -> None:  # type: ignore[no-untyped-def]
    lm = load_model(ModelSpec(name=str(tiny_model_dirs[architecture])))
    prompt = "Once upon a time there was"
    text = " a little fox who lived in the forest near a river and a tree"
    record = score_text(lm, prompt, text, ScoreParams(top_k=5, include_prompt=True), chunk=5)
    ids = encode_prompt(lm, prompt) + list(lm.tokenizer(text, add_special_tokens=False).input_ids)
    assert len(ids) > 16  # twice the tiny models' sliding window of 8
    assert_matches(record, reference(lm, ids, 1, 5))


def test_logits_leave_the_model_a_chunk_at_a_time(demo: LoadedModel) -> None:
    runner = ModelRunner(demo.model, top_k=1)
    ids = encode_prompt(demo, "Once upon a time, there was a little fox who lived in the forest.")
    shapes = runner.each_position(ids, 2, lambda position, logits: (position, tuple(logits.shape)), chunk=4)
    assert [s[0] for s in shapes] == [2, *range(4, len(ids), 4)]  # chunks of 4 from position 0
    assert all(rows <= 4 and vocab == runner.vocab_size for _, (rows, vocab) in shapes)
    assert sum(rows for _, (rows, _) in shapes) == len(ids) - 2
    # By default a chunk's logits stay within the bound whatever the vocabulary.
    default = runner.each_position(ids, 0, lambda position, logits: logits.shape[0])
    assert max(default) * runner.vocab_size <= POSITION_LOGITS_ELEMENTS


def test_bad_text_is_refused_naming_it(demo: LoadedModel) -> None:
    with pytest.raises(ParameterError) as empty:
        score_text(demo, "Once upon a time", "", ScoreParams())
    assert empty.value.field == "text"
    # Whitespace is a text like any other: how likely a paragraph break is after a sentence.
    paragraph = score_text(demo, "Once upon a time, there was a fox.", "\n\n", ScoreParams())
    assert "".join(d["token"] for d in paragraph["data"]) == "\n\n"
    assert demo.context_length is not None
    with pytest.raises(ParameterError) as long:
        score_text(demo, "Once upon a time", " fox" * demo.context_length, ScoreParams())
    assert long.value.field == "text" and "context" in long.value.message
    with pytest.raises(ParameterError) as flag:
        ScoreParams.from_dict({"include_prompt": "yes"})
    assert flag.value.field == "include_prompt"


@pytest.mark.parametrize("settings", [{"temperature": 0.7}, {"temperature": 1.3, "top_p": 0.9},
                                      {"top_k_filter": 5, "min_p": 0.05}], ids=str)
def test_sampler_settings_give_the_processed_and_the_raw_figures(demo: LoadedModel,
                                                                  settings: dict[str, float]) -> None:
    prompt, text = "Once upon a time", ", there was a little car who lived in the forest."
    record = score_text(demo, prompt, text, ScoreParams(top_k=4, **settings))  # type: ignore[arg-type]
    plain = score_text(demo, prompt, text, ScoreParams(top_k=4))
    ids = encode_prompt(demo, prompt) + list(demo.tokenizer(text, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logits = demo.model(input_ids=torch.tensor([ids])).logits[0].float()
    warp = plain_sampler(**settings)
    first = len(encode_prompt(demo, prompt))
    filtered = 0
    for got, raw, i in zip(record["data"], plain["data"], range(first, len(ids)), strict=True):
        # The model's own figures and the rank are those of the plain record; the sampler's are the warpers'.
        assert got["raw_logprob"] == pytest.approx(raw["logprob"], abs=TOLERANCE)
        assert got["rank"] == raw["rank"]
        assert got["raw_entropy"] == pytest.approx(raw["entropy"], abs=TOLERANCE)
        probs = warp(logits[i - 1])
        if probs[ids[i]] == 0:
            filtered += 1
            assert got["logprob"] is None and got["prob"] == 0.0
        else:
            assert got["logprob"] == pytest.approx(math.log(float(probs[ids[i]])), abs=TOLERANCE)
        for other in got["other_tokens"]:
            assert other["logprob"] == pytest.approx(math.log(float(probs[other["token_id"]])), abs=TOLERANCE)
    totals = record["totals"]["text"]
    assert totals["filtered"] == filtered
    assert totals["raw_sum_logprob"] == pytest.approx(plain["totals"]["text"]["sum_logprob"])
    assert (totals["sum_logprob"] is None) == (filtered > 0)
    json.dumps(record, allow_nan=False)  # JSON without infinities: Postgres and browsers read it
