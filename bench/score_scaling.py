"""How scoring a text grows with the text: texts of 250, 1,000 and 4,000 tokens scored after a short prompt
on a random Gemma-2 (width 256, 4 layers, context 8192, the demo tokenizer, a vocabulary of 65,536 as a
real model's): seconds, milliseconds per scored token, and the extra peak memory (resident set, a fresh
process per case), with the default sampler and with temperature 0.7 and top-p 0.9. The [text,
vocabulary] logits of the longest text would take 1.5 GB in fp32.

Scoring evaluates the sequence once, in chunks, and reduces each chunk's [positions, vocabulary] logits
on the device (engine/score.py): time should grow with the text and memory only with its KV, never with
text x vocabulary.

    python bench/score_scaling.py [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.workloads import long_prompt
from tokentree.engine.loading import ModelSpec, load_model
from tokentree.engine.params import ScoreParams
from tokentree.engine.score import score_text, text_ids

TEXT_WORDS = (180, 720, 2900)  # about 370, 1,450 and 5,800 tokens
VOCABULARY = 65_536
SETTINGS = {"default": {}, "t=0.7 top-p=0.9": {"temperature": 0.7, "top_p": 0.9}}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def _case(model_dir: str, words: int, sampler: dict[str, float], threads: int, queue) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(threads)
    lm = load_model(ModelSpec(name=model_dir))
    text = long_prompt(words)
    params = ScoreParams(**sampler)  # type: ignore[arg-type]
    score_text(lm, "Once upon a time", " there was", params)  # warm-up
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    base = _rss_mb("VmRSS")
    started = time.perf_counter()
    record = score_text(lm, "Once upon a time", text, params)
    seconds = time.perf_counter() - started
    assert len(record["data"]) == len(text_ids(lm, text))
    queue.put((len(record["data"]), seconds, _rss_mb("VmHWM") - base))


def main() -> None:
    from bench.tiny_models import make_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp()) / "gemma2-256x4"
    make_tiny_model(folder, "gemma2", width=256, layers=4, context=8192, vocab_size=VOCABULARY)
    print(f"machine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"vocabulary {VOCABULARY:,}\n")
    print("| sampler | text tokens | seconds | ms per token | vs shortest | extra peak MB |")
    print("|---|---|---|---|---|---|")
    context = multiprocessing.get_context("spawn")
    for name, sampler in SETTINGS.items():
        first = None
        for words in TEXT_WORDS:
            queue = context.Queue()
            process = context.Process(target=_case, args=(str(folder), words, sampler, args.threads, queue))
            process.start()
            tokens, seconds, extra = queue.get()
            process.join()
            per_token = seconds / tokens * 1000
            first = first or per_token
            print(f"| {name} | {tokens:,} | {seconds:.2f} | {per_token:.3f} | {per_token / first:.2f}x "
                  f"| {extra:.0f} |")


if __name__ == "__main__":
    main()
