"""Parameters of a tree expansion and of a log-probability analysis, validated once, on creation.

The defaults are the seed notebooks' experiment. Every check raises `ParameterError` naming the field,
so the CLI and the API report the same one-line message for the same mistake.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Self

# Hard ceilings on what a user can ask for; operators may lower them further (see settings).
MAX_NODES_LIMIT = 1_000_000
MAX_DEPTH_LIMIT = 100_000
MAX_NEW_TOKENS_LIMIT = 100_000
MAX_TOP_K = 100
MAX_CANDIDATES_LIMIT = 100
MAX_TEMPERATURE = 100.0
MAX_TOP_K_FILTER = 1_000_000  # above any vocabulary: the filter keeps every token


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


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ParameterError(name, f"must be true or false, got {value!r}")


def _check_number(name: str, value: Any, bounds: Bounds) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(name, f"must be a number, got {value!r}")
    if bounds.above_low and not bounds.low < value <= bounds.high:  # also false for NaN
        raise ParameterError(name, f"must be greater than {bounds.low:g} and at most {bounds.high:g}, "
                                   f"got {value}")
    if not bounds.low <= value <= bounds.high:
        raise ParameterError(name, f"must be between {bounds.low:g} and {bounds.high:g}, got {value}")


@dataclass(frozen=True)
class Bounds:
    """What one parameter means and the range it must lie in: inclusive, except that `above_low` excludes
    `low` itself (a temperature must be greater than 0)."""

    meaning: str
    low: float
    high: float
    above_low: bool = False


def check_bounds(values: object, bounds: dict[str, Bounds]) -> None:
    """Check each dataclass field of `values` against its bounds: an integer field's type and range, a
    float field's range (floats need not be probabilities: a temperature is not)."""
    for f in fields(values):  # type: ignore[arg-type]
        limits, value = bounds[f.name], getattr(values, f.name)
        if f.type == "int":
            _check_int(f.name, value, int(limits.low), int(limits.high))
        elif f.type == "bool":
            _check_bool(f.name, value)
        else:
            _check_number(f.name, value, limits)


# Each parameter, once: its checks, the CLI's help, the API's `GET /v1/parameters` (and through it the
# web form) and the README's table (a test compares them) all read these.
# The sampler's settings, which tree and logprobs jobs both take (`engine.sampling.SamplerSettings`):
# applied to the logits in this order, as transformers' `generate` applies them, before any rule.
SAMPLER_PARAMETERS = {
    "temperature": Bounds("divides the logits before the filters (1: the model's own)", 0.0, MAX_TEMPERATURE,
                          above_low=True),
    "top_k_filter": Bounds("keep only the k most likely tokens (0: off)", 0, MAX_TOP_K_FILTER),
    "top_p": Bounds("keep the most likely tokens whose probabilities add up to top_p (1: off)", 0.0, 1.0),
    "min_p": Bounds("drop tokens less likely than min_p times the most likely one (0: off)", 0.0, 1.0),
}
TREE_PARAMETERS = {
    "min_branch_threshold": Bounds("branching threshold T with an empty queue", 0.0, 1.0),
    "max_branch_threshold": Bounds("T once the queue holds soft_queue_limit paths", 0.0, 1.0),
    "soft_queue_limit": Bounds("queue length at which T reaches its maximum", 1, MAX_NODES_LIMIT),
    "candidate_threshold": Bounds("lowest probability recorded as a candidate", 0.0, 1.0),
    "max_depth": Bounds("longest path, in tokens", 1, MAX_DEPTH_LIMIT),
    "max_completed_paths": Bounds("stop after this many paths reach a stop token", 1, MAX_NODES_LIMIT),
    "max_nodes": Bounds("safety cap on the tree's size", 1, MAX_NODES_LIMIT),
    "max_candidates": Bounds("most candidates recorded per expanded node", 1, MAX_CANDIDATES_LIMIT),
    **SAMPLER_PARAMETERS,
}
LOGPROBS_PARAMETERS = {
    "max_new_tokens": Bounds("tokens generated greedily after the prompt", 1, MAX_NEW_TOKENS_LIMIT),
    "top_k": Bounds("alternatives recorded for each token", 1, MAX_TOP_K),
    **SAMPLER_PARAMETERS,
}
SCORE_PARAMETERS = {
    "top_k": Bounds("alternatives recorded for each scored token", 1, MAX_TOP_K),
    "include_prompt": Bounds("also score the prompt's own tokens after the first", 0, 1),
    **SAMPLER_PARAMETERS,
}
TREE_PARAMETER_HELP = {name: bounds.meaning for name, bounds in TREE_PARAMETERS.items()}


# A field's JSON type by its annotation; every other field is a "number" (a float).
JSON_TYPES = {"int": "integer", "bool": "boolean"}


class _Params:
    """What both kinds of parameters share: a dict in and out, checks against their `BOUNDS`, and a
    description of each field for clients."""

    BOUNDS: ClassVar[dict[str, Bounds]]

    def _check_bounds(self) -> None:
        check_bounds(self, self.BOUNDS)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Each parameter with its JSON type, default, range and meaning, in field order. `minimum` is
        itself allowed unless `exclusive_minimum` says otherwise."""
        return [{"name": f.name, "type": JSON_TYPES.get(str(f.type), "number"), "default": f.default,
                 "minimum": cls.BOUNDS[f.name].low, "exclusive_minimum": cls.BOUNDS[f.name].above_low,
                 "maximum": cls.BOUNDS[f.name].high, "description": cls.BOUNDS[f.name].meaning}
                for f in fields(cls)]  # type: ignore[arg-type]

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
    max_candidates: int = 10
    # The sampler (`SAMPLER_PARAMETERS`): the rule branches on the distribution it leaves.
    temperature: float = 1.0
    top_k_filter: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    BOUNDS = TREE_PARAMETERS

    def __post_init__(self) -> None:
        self._check_bounds()
        if self.min_branch_threshold > self.max_branch_threshold:
            raise ParameterError(
                "min_branch_threshold",
                f"must not exceed max_branch_threshold ({self.min_branch_threshold} > "
                f"{self.max_branch_threshold})",
            )

    def most_children(self) -> int:
        """An upper bound on children per node: fewer than 1/T tokens can each have probability > T."""
        if self.min_branch_threshold <= 0.0:
            return self.max_nodes
        return min(self.max_nodes, int(1.0 / self.min_branch_threshold) + 1)


@dataclass(frozen=True)
class LogprobsParams(_Params):
    """Greedy generation with per-token log-probabilities (the seed's Experiment 1)."""

    BOUNDS = LOGPROBS_PARAMETERS

    max_new_tokens: int = 100
    top_k: int = 5
    # The sampler (`SAMPLER_PARAMETERS`): the greedy choice is made on the distribution it leaves.
    temperature: float = 1.0
    top_k_filter: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        self._check_bounds()


@dataclass(frozen=True)
class ScoreParams(_Params):
    """Scoring a given text token by token (`engine.score`): how much to record of each token."""

    BOUNDS = SCORE_PARAMETERS

    top_k: int = 5
    include_prompt: bool = False
    # The sampler (`SAMPLER_PARAMETERS`): each token's `logprob` is under the distribution it leaves.
    temperature: float = 1.0
    top_k_filter: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        self._check_bounds()


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
