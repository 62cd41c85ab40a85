"""`tokentree`: build token trees and log-probability analyses, and run the service.

This module only assembles the commands (each in its own module, sharing cli/common.py) and reports their
errors: bad input never ends in a traceback, but in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tokentree.cli import (
    compare_cmd,
    keys_cmd,
    model_cmd,
    score_cmd,
    service,
    status_cmd,
    study_cmd,
    worker_cmd,
)
from tokentree.cli.common import Parser
from tokentree.cli.errors import USAGE_ERROR, UsageError
from tokentree.engine.params import ParameterError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tokentree", description="See how a language model decides: token trees and log-probs."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    model_cmd.add_commands(commands)
    score_cmd.add_command(commands)
    compare_cmd.add_command(commands)
    service.add_commands(commands)
    keys_cmd.add_command(commands)
    status_cmd.add_command(commands)
    study_cmd.add_command(commands)
    worker_cmd.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tokentree.engine.errors import ModelLoadError

    try:
        return int(args.handler(args) or 0)
    except (ParameterError, ModelLoadError, UsageError) as exc:
        print(f"tokentree: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("tokentree: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`tokentree tree ... | head`): what it wanted was printed. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again, as Python's docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command a pipe closed


if __name__ == "__main__":
    sys.exit(main())
