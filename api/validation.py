"""A job request checked against the engine's parameter rules and the operator's caps.

Every mistake is a 422 in FastAPI's own error shape, naming the field: ParameterError from the
engine (the CLI reports the same message) becomes `loc: ["body", "parameters", field]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from fastapi.exceptions import RequestValidationError

from tokentree.api.schemas import JobCreate
from tokentree.engine.params import LogprobsParams, ParameterError, ScoreParams, TreeParams
from tokentree.models.settings import Settings


def reject(loc: tuple[str | int, ...], message: str, value: Any = None) -> NoReturn:
    """Answer 422 with one error at `loc`, as FastAPI does for the errors it finds itself."""
    raise RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


@dataclass(frozen=True)
class JobRequest:
    kind: str
    prompt: str
    model: str
    parameters: dict[str, Any]
    chat: bool
    prefix: str | None
    text: str | None = None  # what a score job scores


# Each job kind's parameters.
PARAMS_BY_KIND: dict[str, type[TreeParams] | type[LogprobsParams] | type[ScoreParams]] = {
    "tree": TreeParams, "logprobs": LogprobsParams, "score": ScoreParams,
}


def _check_text(name: str, value: str | None, settings: Settings) -> None:
    if value is None:
        return
    if len(value) > settings.max_prompt_chars:
        reject(("body", name), f"must be at most {settings.max_prompt_chars} characters, got {len(value)}")
    if "\x00" in value:
        reject(("body", name), "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): no database stores it
        reject(("body", name), "must be valid Unicode (no lone surrogates)")


def _cap(name: str, value: int, limit: int) -> None:
    if value > limit:
        reject(("body", "parameters", name), f"must be at most {limit} on this server, got {value}", value)


def _capped_defaults(values: dict[str, Any], defaults: Any, caps: dict[str, int]) -> dict[str, Any]:
    """A size the request leaves out is the engine's default or the server's cap, whichever is lower
    (an operator's lower cap must not make every request without that parameter a 422)."""
    filled = dict(values)
    for name, cap in caps.items():
        if name not in filled:
            filled[name] = min(getattr(defaults, name), cap)
    return filled


def server_caps(kind: str, settings: Settings) -> dict[str, int]:
    """The operator's caps on a job kind's sizes (TOKENTREE_MAX_NODES, ...), below the engine's."""
    if kind == "tree":
        return {"max_nodes": settings.max_nodes, "max_depth": settings.max_depth}
    if kind == "logprobs":
        return {"max_new_tokens": settings.max_new_tokens}
    return {}  # a score job's size is its text's, capped as a prompt is (TOKENTREE_MAX_PROMPT_CHARS)


def describe_parameters(kind: str, settings: Settings) -> list[dict[str, Any]]:
    """The kind's parameters as this server applies them: the engine's, with the caps' lower defaults
    and maxima."""
    caps = server_caps(kind, settings)
    described = PARAMS_BY_KIND[kind].describe()
    for parameter in described:
        if (cap := caps.get(parameter["name"])) is not None:
            parameter["default"] = min(parameter["default"], cap)
            parameter["maximum"] = min(parameter["maximum"], cap)
    return described


def _parameters(kind: str, values: dict[str, Any], settings: Settings) -> dict[str, Any]:
    caps = server_caps(kind, settings)
    try:
        params_type = PARAMS_BY_KIND[kind]
        params = params_type.from_dict(_capped_defaults(values, params_type(), caps))
        for name, limit in caps.items():
            _cap(name, getattr(params, name), limit)
        return params.to_dict()
    except ParameterError as exc:
        reject(("body", "parameters", exc.field), exc.message, values.get(exc.field))


def validate_parameters(kind: str, values: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A job kind's parameters complete (defaults filled in) and within this server's caps; a 422 naming
    the field otherwise."""
    return _parameters(kind, values, settings)


def validate_job_request(body: JobCreate, settings: Settings) -> JobRequest:
    """The request with its model resolved and its parameters complete (defaults filled in)."""
    _check_text("prompt", body.prompt, settings)
    if not body.prompt.strip():  # the model would get no tokens: the worker could only fail the job
        reject(("body", "prompt"), "must not be only whitespace")
    _check_text("prefix", body.prefix, settings)
    _check_text("text", body.text, settings)
    if body.kind == "score" and not body.text:  # whitespace is a text to score; nothing is not
        reject(("body", "text"), "a score job needs the text to score", body.text)
    if body.kind != "score" and body.text is not None:
        reject(("body", "text"), f"only score jobs take a text; this is a {body.kind} job", body.text)
    model = settings.default_model if body.model is None else body.model
    if model not in settings.models:
        reject(("body", "model"), f"not served here; one of {', '.join(settings.models)}", model)
    return JobRequest(kind=body.kind, prompt=body.prompt, model=model,
                      parameters=_parameters(body.kind, body.parameters, settings),
                      chat=body.chat, prefix=body.prefix, text=body.text)
