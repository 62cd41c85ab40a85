"""The workloads the benchmarks share: the seed's 10 prompts x 10 parameter sets, and the long prompt."""

from __future__ import annotations

from tokentree.engine.params import TreeParams

# Ten prompts of the kind the seed notebooks used.
SEED_PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "The secret to happiness is",
    "In the beginning",
    "My favourite food is",
    "A robot walked into a bar and",
    "The best way to learn is",
    "Yesterday I went to the",
    "The weather today is",
    "She opened the door and",
]

# Ten parameter sets around the seed's defaults (the first is the defaults themselves).
SEED_PARAMETER_SETS = [
    TreeParams(),
    TreeParams(min_branch_threshold=0.05),
    TreeParams(min_branch_threshold=0.15),
    TreeParams(max_branch_threshold=0.4),
    TreeParams(max_branch_threshold=0.6),
    TreeParams(soft_queue_limit=10),
    TreeParams(soft_queue_limit=60),
    TreeParams(max_completed_paths=3),
    TreeParams(max_completed_paths=8),
    TreeParams(min_branch_threshold=0.2, max_branch_threshold=0.6, soft_queue_limit=20),
]


def seed_workload() -> list[tuple[str, TreeParams]]:
    """The 100 (prompt, parameters) pairs, prompt-major."""
    return [(prompt, params) for prompt in SEED_PROMPTS for params in SEED_PARAMETER_SETS]


def long_prompt(words: int = 600) -> str:
    """About a thousand demo tokens of plain prose ending in a story opening (the kind of context a chat
    template, system prompt or document adds in front of a question)."""
    text = (
        "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun. "
        "Children play in the park and their parents talk about the news of the day. "
    )
    out = (text * (words // len(text.split()) + 1)).split()[:words]
    return " ".join(out) + " Once upon a time"
