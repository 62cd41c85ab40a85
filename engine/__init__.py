"""The tokentree inference engine: token-tree expansion and log-probability analysis.

Imports torch and transformers only; the service stack (api, workers, models) builds on it, never the
other way round.
"""

from pathlib import Path

from tokentree.engine.params import LogprobsParams, ParameterError, TreeParams, branch_threshold

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"  # the bundled checkpoint (`--model demo`)

__all__ = ["DEMO_MODEL_DIR", "LogprobsParams", "ParameterError", "TreeParams", "branch_threshold"]
