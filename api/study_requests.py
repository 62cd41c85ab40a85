"""A study request checked and expanded into its jobs: every combination of its prompts, models and
parameter sets, each checked by the same rules as a job submitted alone (`api.validation`).

Every mistake is a 422 naming the field where it is: `["body", "prompts", 3]`, `["body", "values", 2]`
(a row without a value for one of the template's fields), `["body", "parameter_sets", 1, "max_nodes"]`,
`["body", "models", 0]`. Each prompt, model and parameter set is checked once, not once per combination.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError

from tokentree.api.schemas import JobCreate, StudyCreate, TemplateValue
from tokentree.api.validation import JobRequest, reject, validate_job_request
from tokentree.models.settings import Settings
from tokentree.models.studies import StudyJob

Location = tuple[str | int, ...]
# A prompt that only stands in while a model or a parameter set is checked (prompts are checked apart).
STAND_IN_PROMPT = "x"


@dataclass(frozen=True)
class StudyRequest:
    name: str
    kind: str
    chat: bool
    prefix: str | None
    combinations: list[StudyJob]  # prompts, then models, then parameter sets
    request: dict[str, Any]  # the body as accepted: what a replayed Idempotency-Key must ask again


def template_fields(template: str) -> list[str]:
    """The `{name}` fields of a prompt template, in order of first use. Only plain names: no positional
    `{}`, no attribute or index (`{a.b}`, `{a[0]}`), no conversion or format spec; `{{` is a brace."""
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        reject(("body", "template"), f"is not a valid template: {exc}", template)
    for _literal, field, format_spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or format_spec or conversion:
            reject(("body", "template"), f"{{{field}{'!' + conversion if conversion else ''}"
                   f"{':' + format_spec if format_spec else ''}}} is not a field: write {{name}} "
                   "(letters, digits, _), and {{ or }} for a brace", template)
        if field not in fields:
            fields.append(field)
    return fields


def render_prompts(template: str, rows: Sequence[dict[str, TemplateValue]]) -> list[str]:
    """One prompt per row of values, each `{name}` of the template replaced by the row's value."""
    fields = template_fields(template)
    parsed = list(string.Formatter().parse(template))
    prompts = []
    for index, row in enumerate(rows):
        _check_storable(index, row)
        missing = [field for field in fields if field not in row]
        if missing:
            reject(("body", "values", index), f"has no value for the template's field {{{missing[0]}}} "
                   f"(fields: {', '.join(fields)})", row)
        prompt = "".join(literal + ("" if field is None else str(row[field]))
                         for literal, field, _, _ in parsed)
        if not prompt:
            reject(("body", "values", index), "makes an empty prompt", row)
        prompts.append(prompt)
    return prompts


def _check_storable(index: int, row: dict[str, TemplateValue]) -> None:
    """The study keeps its request as JSON: a NUL character or a lone surrogate in any name or value of a
    row (used by the template or not) is refused here, where its place can be named, not by the database."""
    for text in (piece for key, value in row.items() for piece in (key, value) if isinstance(piece, str)):
        if "\x00" in text:
            reject(("body", "values", index), "must not contain NUL characters", row)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            reject(("body", "values", index), "must be valid Unicode (no lone surrogates)")


def _relocated(check: Callable[[], JobRequest], moves: dict[Location, Location]) -> JobRequest:
    """`check()`, its 422s moved from a job's fields to the study's (`("body", "prompt")` to
    `("body", "prompts", 3)`, ...)."""
    try:
        return check()
    except RequestValidationError as exc:
        errors = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            for old, new in moves.items():
                if loc[:len(old)] == old:
                    loc = new + loc[len(old):]
                    break
            errors.append({**error, "loc": loc})
        raise RequestValidationError(errors) from None


def _job_count(body: StudyCreate, prompts: int, settings: Settings) -> None:
    models = len(body.models or [None])
    count = prompts * models * len(body.parameter_sets)
    if count > settings.study_max_jobs:
        field = "prompts" if body.prompts is not None else "values"
        reject(("body", field), f"the study would make {prompts} prompts x {models} models x "
               f"{len(body.parameter_sets)} parameter sets = {count} jobs; at most {settings.study_max_jobs} "
               "on this server")


def validate_study_request(body: StudyCreate, settings: Settings) -> StudyRequest:
    """The study's combinations, every model resolved and every parameter set complete."""
    if body.prompts is not None and (body.template is not None or body.values is not None):
        reject(("body", "template"), "give either prompts or a template with values, not both")
    if body.prompts is None:
        if body.template is None:
            reject(("body", "prompts"), "give prompts, or a template with values")
        if body.values is None:
            reject(("body", "values"), "a template needs values: one row of its fields per prompt")
    if not body.name.strip():
        reject(("body", "name"), "must not be only whitespace", body.name)
    if "\x00" in body.name or not body.name.isprintable():
        reject(("body", "name"), "must be printable text (no control characters)")
    if body.template is not None:
        template_fields(body.template)  # a wrong template is named before the size of the study
    _job_count(body, len(body.prompts if body.prompts is not None else body.values or []), settings)
    prompt_field = "prompts" if body.prompts is not None else "values"
    prompts = body.prompts
    if prompts is None:
        prompts = render_prompts(body.template or "", body.values or [])

    def job(prompt: str, model: str | None, parameters: dict[str, Any]) -> Callable[[], JobRequest]:
        return lambda: validate_job_request(
            JobCreate(prompt=prompt, model=model, kind=body.kind, parameters=parameters, chat=body.chat,
                      prefix=body.prefix), settings)

    models = [
        _relocated(job(STAND_IN_PROMPT, model, {}), {("body", "model"): ("body", "models", index)}).model
        for index, model in enumerate(body.models or [None])]
    parameter_sets = [
        _relocated(job(STAND_IN_PROMPT, models[0], parameters),
                   {("body", "parameters"): ("body", "parameter_sets", index)}).parameters
        for index, parameters in enumerate(body.parameter_sets)]
    for index, prompt in enumerate(prompts):
        _relocated(job(prompt, models[0], {}), {("body", "prompt"): ("body", prompt_field, index)})
    return StudyRequest(
        name=body.name.strip(), kind=body.kind, chat=body.chat, prefix=body.prefix,
        combinations=[StudyJob(prompt=prompt, model=model, parameters=parameters)
                      for prompt in prompts for model in models for parameters in parameter_sets],
        request=body.model_dump(mode="json"),
    )
