"""tokentree from Python: build token trees in this process, or submit them to a tokentree service and
read them back, as one `Tree` type either way.

    import tokentree
    tree = tokentree.build_tree("Once upon a time", max_nodes=200)
    tree.paths()[0].text

    with tokentree.Client("http://127.0.0.1:8000") as client:
        job = client.wait(client.submit("Once upon a time", max_nodes=200))
        tree = client.tree(job)

Importing this package loads neither torch nor the service: the in-process builder loads the engine on
its first call, and the client speaks HTTP only.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tokentree.version import __version__

if TYPE_CHECKING:
    from tokentree.client import Client
    from tokentree.engine.params import LogprobsParams, ParameterError, ScoreParams, TreeParams
    from tokentree.engine.tree import Candidate, CompletedPath, Node
    from tokentree.errors import APIError, JobTimeout, StudyTimeout
    from tokentree.jobs import Job, JobProgress
    from tokentree.local import build_tree, logprobs, score
    from tokentree.studies import Study, StudyProgress
    from tokentree.tree import Tree

# Each name's module, imported on first use: `import tokentree.cli` (the command line) or `tokentree.api`
# (the service) then loads neither the HTTP client nor the engine's parameters.
_EXPORTS = {
    "APIError": "tokentree.errors",
    "Candidate": "tokentree.engine.tree",
    "Client": "tokentree.client",
    "CompletedPath": "tokentree.engine.tree",
    "Job": "tokentree.jobs",
    "JobProgress": "tokentree.jobs",
    "JobTimeout": "tokentree.errors",
    "LogprobsParams": "tokentree.engine.params",
    "Node": "tokentree.engine.tree",
    "ParameterError": "tokentree.engine.params",
    "ScoreParams": "tokentree.engine.params",
    "Study": "tokentree.studies",
    "StudyProgress": "tokentree.studies",
    "StudyTimeout": "tokentree.errors",
    "Tree": "tokentree.tree",
    "TreeParams": "tokentree.engine.params",
    "build_tree": "tokentree.local",
    "logprobs": "tokentree.local",
    "score": "tokentree.local",
}

__all__ = [
    "APIError",
    "Candidate",
    "Client",
    "CompletedPath",
    "Job",
    "JobProgress",
    "JobTimeout",
    "LogprobsParams",
    "Node",
    "ParameterError",
    "ScoreParams",
    "Study",
    "StudyProgress",
    "StudyTimeout",
    "Tree",
    "TreeParams",
    "__version__",
    "build_tree",
    "logprobs",
    "score",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tokentree' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next lookup finds it without this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
