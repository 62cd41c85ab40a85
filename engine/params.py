"""Parameters of a tree expansion and of a log-probability analysis, validated once, on creation.

The defaults are the seed notebooks' experiment. Every check raises `ParameterError` naming the field,
so the CLI and the API report the same one-line message for the same mistake.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Self

# Hard ceilings on what a user can ask for; operators may lower them further (see settings).
MAX_NODES_LIMIT = 1_000_000
MAX_DEPTH_LIMIT = 100_000
MAX_NEW_TOKENS_LIMIT = 100_000
MAX_TOP_K = 100


class ParameterError(ValueError):
    """A parameter is out of range; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ParameterError(name, f"must be between {low} and {high}, got {value}")


def _check_probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(name, f"must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ParameterError(name, f"must be between 0 and 1, got {value}")


# What each of TreeParams' fields means (the README's table; the CLI's help and the API's schema).
TREE_PARAMETER_HELP = {
    "min_branch_threshold": "branching threshold T with an empty queue",
    "max_branch_threshold": "T once the queue holds soft_queue_limit paths",
    "soft_queue_limit": "queue length at which T reaches its maximum",
    "candidate_threshold": "lowest probability recorded as a candidate",
    "max_depth": "longest path, in tokens",
    "max_completed_paths": "stop after this many paths reach a stop token",
    "max_nodes": "safety cap on the tree's size",
}


class _Params:
    """What both kinds of parameters share: a dict in and out."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a mapping, rejecting names that are not parameters (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter; expected one of {', '.join(sorted(known))}")
        return cls(**values)


@dataclass(frozen=True)
class TreeParams(_Params):
    """How far and how wide a token tree grows."""

    min_branch_threshold: float = 0.1
    max_branch_threshold: float = 0.5
    soft_queue_limit: int = 30
    candidate_threshold: float = 0.01
    max_depth: int = 1000
    max_completed_paths: int = 5
    max_nodes: int = 100_000

    def __post_init__(self) -> None:
        _check_probability("min_branch_threshold", self.min_branch_threshold)
        _check_probability("max_branch_threshold", self.max_branch_threshold)
        _check_probability("candidate_threshold", self.candidate_threshold)
        if self.min_branch_threshold > self.max_branch_threshold:
            raise ParameterError(
                "min_branch_threshold",
                f"must not exceed max_branch_threshold ({self.min_branch_threshold} > "
                f"{self.max_branch_threshold})",
            )
        _check_int("soft_queue_limit", self.soft_queue_limit, 1, MAX_NODES_LIMIT)
        _check_int("max_depth", self.max_depth, 1, MAX_DEPTH_LIMIT)
        _check_int("max_completed_paths", self.max_completed_paths, 1, MAX_NODES_LIMIT)
        _check_int("max_nodes", self.max_nodes, 1, MAX_NODES_LIMIT)

    def most_children(self) -> int:
        """An upper bound on children per node: fewer than 1/T tokens can each have probability > T."""
        if self.min_branch_threshold <= 0.0:
            return self.max_nodes
        return min(self.max_nodes, int(1.0 / self.min_branch_threshold) + 1)


@dataclass(frozen=True)
class LogprobsParams(_Params):
    """Greedy generation with per-token log-probabilities (the seed's Experiment 1)."""

    max_new_tokens: int = 100
    top_k: int = 5

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        _check_int("top_k", self.top_k, 1, MAX_TOP_K)


def check_prompt(prompt: str) -> None:
    """A prompt must have some text; its length in tokens is checked against the model once it is loaded."""
    if not prompt.strip():
        raise ParameterError("prompt", "must not be empty")


def branch_threshold(queue_depth: int, params: TreeParams) -> float:
    """The seed's dynamic threshold: rises from min to max as the queue fills toward soft_queue_limit."""
    saturation = min(1.0, queue_depth / params.soft_queue_limit)
    return params.min_branch_threshold + saturation * (
        params.max_branch_threshold - params.min_branch_threshold
    )
