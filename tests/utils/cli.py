"""The `tokentree` command line as a subprocess, run from the repository root with an environment of the
test's choosing (none of the developer's TOKENTREE_* settings leak in): one command, or `tokentree serve`
on a free port until the test is done with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.utils.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_command(*args: str) -> list[str]:
    # Not `-m cli.main`: run as __main__, its UsageError would not be the one cli.service raises.
    return [sys.executable, "-c", "import sys; from tokentree.cli.main import main; sys.exit(main())", *args]


def cli_env(**variables: str) -> dict[str, str]:
    """The environment for a `tokentree` subprocess: ours without TOKENTREE_*, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTREE_")}
    env.update(variables)
    return env


def run_cli(*args: str, timeout: float = 120, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the `tokentree` command line in a subprocess from the repository root."""
    return subprocess.run(cli_command(*args), env=cli_env(**variables), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


@contextmanager
def tokentree_serve(tmp_path: Path, **variables: str) -> Iterator[httpx.Client]:
    """`tokentree serve` on a free port, its data and its log (serve.log) in `tmp_path`; a client on it
    once /healthz answers."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cli_command("serve", "--port", str(port)), cwd=REPO_ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env=cli_env(XDG_DATA_HOME=str(tmp_path), **variables))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    pytest.fail(f"tokentree serve exited: {(tmp_path / 'serve.log').read_text()}")
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("tokentree serve did not answer in 120 s")
                time.sleep(0.25)
            yield client
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
