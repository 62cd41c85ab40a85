"""`tokentree study FILE.yaml|json`: submit a study to a running service, follow it, print its top forks.

The file holds the body of `POST /v1/studies` (YAML or JSON): a name, `prompts` (or a `template` with
`values`), `models`, `parameter_sets`, and optionally `kind`, `chat` and `prefix`. The command talks to
the service over HTTP only (`tokentree.Client`), as any client would: the service checks the study, and
its refusal is printed as one line (exit 2), as is a file that cannot be read.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokentree.cli.common import Parser
from tokentree.cli.errors import UsageError

if TYPE_CHECKING:
    from tokentree import Client, Study

DEFAULT_SERVER = "http://127.0.0.1:8000"
API_KEY_VARIABLE = "TOKENTREE_API_KEY"
MAX_FILE_BYTES = 1024 * 1024  # far more than any study the service takes (TOKENTREE_MAX_REQUEST_BYTES)
FORK_RANKINGS = ("entropy", "branches", "unexplored_mass")
CANDIDATES_SHOWN = 4
SOME_FAILED = 1


def add_command(commands: argparse._SubParsersAction[Parser]) -> None:
    study = commands.add_parser(
        "study", help="submit a study (prompts x models x parameter sets) to a service and follow it",
        description="Submit the study in FILE (YAML or JSON: the body of POST /v1/studies) to a running "
                    "tokentree service, follow its jobs with a progress bar, and print its top forks.")
    study.add_argument("file", type=Path, help="the study: name, prompts (or template and values), "
                                               "models, parameter_sets")
    study.add_argument("--server", default=DEFAULT_SERVER, help="the service's URL")
    study.add_argument("--api-key", default=None,
                       help=f"an API key, where the service requires one (default ${API_KEY_VARIABLE})")
    study.add_argument("--no-wait", action="store_true", help="submit, print the study's id, and return")
    study.add_argument("--forks", type=int, default=10, help="how many fork points to print at the end")
    study.add_argument("--by", choices=FORK_RANKINGS, default="entropy", help="how forks are ranked")
    study.set_defaults(handler=run_study)


def read_study(path: Path) -> dict[str, Any]:
    """The study's body from a YAML or JSON file (JSON is YAML too); a one-line UsageError otherwise."""
    import yaml

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; no study is that large")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    try:
        body = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}: " if where is not None else ""
        raise UsageError(f"{path}: not YAML ({line}{getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path}: a study is a mapping (name: ..., prompts: [...]), "
                         f"not {type(body).__name__}")
    keys = study_keys()
    unknown = sorted(str(key) for key in body if key not in keys)
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r} (a study has {', '.join(keys)})")
    if "name" not in body:
        raise UsageError(f"{path}: a study needs a name (name: ...)")
    return body


def study_keys() -> list[str]:
    """The keys a study file may have: `Client.submit_study`'s arguments, the request's fields."""
    from tokentree import Client

    return [name for name in inspect.signature(Client.submit_study).parameters
            if name not in ("self", "idempotency_key")]


def run_study(args: argparse.Namespace) -> int:
    import httpx

    from tokentree import APIError, Client

    if args.forks < 0:
        raise UsageError(f"--forks must be 0 or more, got {args.forks}")
    body = read_study(args.file)
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    try:
        with Client(args.server, api_key=api_key) as client:
            return _submit_and_follow(client, body, args)
    except APIError as refused:
        raise UsageError(f"the service refused the study: {refused.message}") from None
    except httpx.TransportError as exc:
        raise UsageError(f"cannot reach the tokentree service at {args.server}: {exc}") from None


def _submit_and_follow(client: Client, body: dict[str, Any], args: argparse.Namespace) -> int:
    study = client.submit_study(**body)
    page = f"{client.url}/viewer/study?id={study.id}"
    print(f"study {study.name} ({study.id}): {study.progress.jobs} jobs queued")
    print(f"view: {page}")
    if args.no_wait:
        return 0
    done = client.wait(study)
    _print_outcome(done)
    if args.forks:
        _print_forks(client, done, args.by, args.forks)
    return SOME_FAILED if done.progress.by_status.get("failed") else 0


def _print_outcome(study: Study) -> None:
    statuses = ", ".join(f"{count} {status}" for status, count in study.progress.by_status.items() if count)
    print(f"done: {statuses}; {study.progress.nodes} nodes, {study.progress.completed_paths} completed paths")
    for job in study.jobs or []:
        if job.status == "failed":
            reason = (job.error or "").strip().splitlines()[-1:] or ["no error recorded"]
            print(f"  failed: {job.id} ({job.prompt!r} on {job.model}): {reason[0]}")


def _print_forks(client: Client, study: Study, by: str, limit: int) -> None:
    forks = client.fork_points(study, by=by, limit=limit)
    if not forks:
        print("no fork points: no tree branched")
        return
    print(f"top forks by {by} (entropy, branches, unexplored mass; prompt | path -> candidates):")
    for fork in forks:
        entropy = "-" if fork["entropy"] is None else f"{fork['entropy']:.3f}"
        candidates = ", ".join(f"{candidate['text']!r} {candidate['prob']:.3f}"
                               for candidate in fork["candidates"][:CANDIDATES_SHOWN])
        print(f"  {entropy}  {fork['branches']}  {fork['unexplored_mass']:.3f}  "
              f"{fork['prompt']!r} | {fork['path_text']!r} -> {candidates}")
