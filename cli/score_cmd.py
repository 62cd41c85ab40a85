"""`tokentree score PROMPT --text TEXT`: how likely the model finds a given text as the continuation of a
prompt, token by token (engine/score.py), printed as a table with the totals; `-o` appends the record
as `tokentree logprobs -o` does.

A token the model found unlikely (probability under `UNLIKELY_PERCENT`, the log-prob viewer's rule) is
marked with `!`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tokentree.cli.common import Parser
from tokentree.cli.model_cmd import _add_parameter_flags, _load, add_model_options
from tokentree.engine.params import SAMPLER_PARAMETERS, SCORE_PARAMETERS, ScoreParams, check_prompt

# Below this probability (in percent) a token is marked unlikely, here and in the log-prob viewer.
UNLIKELY_PERCENT = 1.0
# Alternatives printed beside each token (the record keeps --top-k of them).
SHOWN_ALTERNATIVES = 3


def add_command(commands: argparse._SubParsersAction[Parser]) -> None:
    score = commands.add_parser("score",
                                help="the log-probability of every token of a given text after a prompt")
    score.add_argument("prompt", help="the text the model continues")
    score.add_argument("--text", required=True, help="the continuation to score (tokenized on its own)")
    score.add_argument("--include-prompt", action="store_true",
                       help=SCORE_PARAMETERS["include_prompt"].meaning)
    score.add_argument("--top-k", type=int, default=ScoreParams().top_k, metavar="K",
                       help=SCORE_PARAMETERS["top_k"].meaning)
    score.add_argument("-o", "--output", type=Path, help="append the JSONL record to this file")
    _add_parameter_flags(score.add_argument_group("sampler (each token's logprob is under what it leaves)"),
                         ScoreParams(), SAMPLER_PARAMETERS)
    add_model_options(score)
    score.set_defaults(handler=run_score)


def run_score(args: argparse.Namespace) -> int:
    # Checked before torch and transformers are imported, as `tokentree tree` does.
    params = ScoreParams(**{name: getattr(args, name) for name in SCORE_PARAMETERS})
    check_prompt(args.prompt)
    from tokentree.engine.score import score_text

    lm = _load(args)
    record = score_text(lm, args.prompt, args.text, params, chat=args.chat, prefix=args.prefix)
    print_record(record)
    if args.output is not None:
        with args.output.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        print(f"record appended to {args.output}")
    return 0


def print_record(record: dict[str, Any]) -> None:
    """Each scored token with its probability, log-prob, rank, entropy and the most likely tokens there;
    then the totals."""
    print(f"{'#':>4}  {'token':<16} {'prob':>8} {'logprob':>9} {'rank':>6} {'entropy':>7}   "
          "most likely there")
    for index, step in enumerate(record["data"], 1):
        unlikely = "!" if step["prob"] < UNLIKELY_PERCENT else " "
        part = " (prompt)" if step["part"] == "prompt" else ""
        shown = step["other_tokens"][:SHOWN_ALTERNATIVES]
        likely = "  ".join(f"{o['token']!r} {o['prob']:.1f}%" for o in shown)
        logprob = "-inf" if step["logprob"] is None else f"{step['logprob']:.4f}"  # filtered by the sampler
        print(f"{index:>4}{unlikely} {step['token']!r:<16} {step['prob']:7.2f}% {logprob:>9} "
              f"{step['rank']:>6} {step['entropy']:7.2f}   {likely}{part}")
    asked, defaults = record["metadata"]["parameters"], ScoreParams()
    sampled = any(asked[name] != getattr(defaults, name) for name in SAMPLER_PARAMETERS)
    for part, totals in record["totals"].items():
        print(f"{part}: {totals['tokens']} tokens  {_totals_text(totals, '')}")
        if sampled:  # the figures above are the sampler's; the model's own too
            print(f"{part}, the model's own: {_totals_text(totals, 'raw_')}")
    if any(step["prob"] < UNLIKELY_PERCENT for step in record["data"]):
        print(f"! the model gave this token less than {UNLIKELY_PERCENT:g}%")


def _totals_text(totals: dict[str, Any], key: str) -> str:
    """Sum and mean log-prob and perplexity (`key`: "" for the sampler's, "raw_" for the model's own)."""
    if totals[f"{key}sum_logprob"] is None:
        return f"sum logprob -inf ({totals['filtered']} tokens filtered out by the sampler)"
    perplexity = totals[f"{key}perplexity"]
    return (f"sum logprob {totals[f'{key}sum_logprob']:.4f}  "
            f"mean logprob {totals[f'{key}mean_logprob']:.4f}  "
            f"perplexity {'overflow' if perplexity is None else f'{perplexity:.2f}'}")
