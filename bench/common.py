"""What the benchmark scripts share: the repository's root, the `tokentree` command line as a subprocess
with its environment, and a free loopback port."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Not `-m cli.main`: run as __main__, its UsageError would not be the one cli.service raises.
CLI = [sys.executable, "-c", "import sys; from tokentree.cli.main import main; sys.exit(main())"]


def cli_env(**variables: str) -> dict[str, str]:
    """The environment for a `tokentree` subprocess: ours without TOKENTREE_*, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTREE_")}
    env.update(variables)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
