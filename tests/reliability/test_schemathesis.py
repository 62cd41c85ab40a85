"""Bad input at scale: schemathesis generates requests from the live API's OpenAPI document (valid and
invalid bodies, queries, path parameters, headers; then sequences that reuse the jobs it created) and
checks that none is answered with a 5xx and that every documented response matches its schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.reliability.conftest import new_token, service_settings
from tests.utils.servers import live_api_for

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]

MAX_EXAMPLES = 30
MAX_TIME_S = 90
CHECKS = "not_a_server_error,response_schema_conformance"


def test_no_5xx_and_no_schema_violation(
    clean_pg: Engine, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Generated jobs go to Redis (no worker runs them); their event streams end within a second.
    # With keys required and a real one sent: the owner checks and the rate limiter's path run too
    # (a bucket far above what two workers can spend).
    _, token = new_token(clean_pg, "schemathesis")
    settings = service_settings(
        postgres_url,
        redis_url,
        events_max_s=1.0,
        events_interval_s=0.2,
        require_api_key=True,
        rate_limit_per_minute=1_000_000,
        rate_limit_burst=100_000,
        max_active_jobs_per_key=0,
    )
    with live_api_for(settings) as api:
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{api.url}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "20261128",
                "--no-shrink",
                "--workers",
                "2",
                "--request-timeout",
                "10",
                "--report",
                "ndjson",
                "--report-dir",
                str(tmp_path),
                "--suppress-health-check",
                "all",
                "--max-time",
                str(MAX_TIME_S),
                "-H",
                f"Authorization: Bearer {token}",
                # The coverage phase trips over a CPython 3.11 bug in hypothesis' lambda printing.
                "--phases",
                "examples,fuzzing,stateful",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
    output = done.stdout + done.stderr
    print(output[-6000:])
    assert done.returncode == 0, output[-6000:]
    generated = re.search(r"Test cases:\s*\n?\s*(\d+) generated", output) or re.search(
        r"(\d+) generated", output
    )
    assert generated and int(generated.group(1)) >= 300, output[-3000:]
    reports = list(tmp_path.glob("*.ndjson"))
    statuses: dict[int, int] = {}
    for line in reports[0].read_text().splitlines() if reports else []:
        event = json.loads(line)
        for interaction in _interactions(event):
            status = interaction["response"]["status_code"]
            statuses[status] = statuses.get(status, 0) + 1
    print("responses by status:", dict(sorted(statuses.items())))
    assert not [code for code in statuses if code >= 500]


def _interactions(event: object) -> list[dict]:  # type: ignore[type-arg]
    found = []
    stack = [event]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if (
                "response" in item
                and isinstance(item["response"], dict)
                and "status_code" in item["response"]
            ):
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
