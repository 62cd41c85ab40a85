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

from engine.params import LogprobsParams, ParameterError, ScoreParams, TreeParams
from engine.tree import Candidate, CompletedPath, Node
from tokentree.client import Client
from tokentree.errors import APIError, JobTimeout, StudyTimeout
from tokentree.jobs import Job, JobProgress
from tokentree.local import build_tree, logprobs, score
from tokentree.studies import Study, StudyProgress
from tokentree.tree import Tree
from tokentree.version import __version__

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
