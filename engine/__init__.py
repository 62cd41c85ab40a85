"""The tokentree inference engine: token-tree expansion and log-probability analysis.

Imports torch and transformers only; the service stack (api, workers, models) builds on it, never the
other way round.
"""

from engine.params import LogprobsParams, ParameterError, TreeParams, branch_threshold

__all__ = ["LogprobsParams", "ParameterError", "TreeParams", "branch_threshold"]
