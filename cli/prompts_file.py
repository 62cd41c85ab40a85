"""`tokentree tree --prompts FILE.jsonl`: many trees from one file, read and checked before any work.

Each line is a JSON object: `{"prompt": ..., "parameters": {...}, "chat": bool, "prefix": str}`, all but
`prompt` optional; `parameters` override the command's flags for that tree. Blank lines are skipped. A
bad line is reported with its number, and nothing is built.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tokentree.cli.errors import UsageError
from tokentree.engine.analysis import TreeRequest
from tokentree.engine.params import ParameterError, TreeParams, check_prompt

MAX_PROMPTS = 10_000  # trees in one file; more belong in several runs (or the service)
KEYS = {"prompt", "parameters", "chat", "prefix"}


def read_requests(path: Path, defaults: TreeRequest) -> list[TreeRequest]:
    """The file's trees, in order; `defaults` carries the command's flags."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--prompts: cannot read {path}: {exc}") from None
    requests: list[TreeRequest] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(requests) == MAX_PROMPTS:
            raise UsageError(f"{path}: more than {MAX_PROMPTS} prompts; split the file")
        try:
            requests.append(_request(json.loads(line), defaults))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number}: not JSON ({exc.msg})") from None
        except (ParameterError, UsageError) as exc:
            raise UsageError(f"{path} line {number}: {exc}") from None
    if not requests:
        raise UsageError(f"{path}: no prompts (one JSON object a line, with a \"prompt\")")
    return requests


def _request(item: Any, defaults: TreeRequest) -> TreeRequest:
    if not isinstance(item, dict):
        raise UsageError("each line must be a JSON object with a \"prompt\"")
    unknown = sorted(set(item) - KEYS)
    if unknown:
        raise UsageError(f"{unknown[0]}: unknown key; expected {', '.join(sorted(KEYS))}")
    prompt = item.get("prompt")
    if not isinstance(prompt, str):
        raise ParameterError("prompt", "must be a string")
    check_prompt(prompt)
    overrides = item.get("parameters", {})
    if not isinstance(overrides, dict):
        raise ParameterError("parameters", "must be a JSON object")
    params = TreeParams.from_dict({**defaults.params.to_dict(), **overrides})
    chat = item.get("chat", defaults.chat)
    if not isinstance(chat, bool):
        raise ParameterError("chat", "must be true or false")
    prefix = item.get("prefix", defaults.prefix)
    if prefix is not None and not isinstance(prefix, str):
        raise ParameterError("prefix", "must be a string")
    return replace(defaults, prompt=prompt, params=params, chat=chat, prefix=prefix)
