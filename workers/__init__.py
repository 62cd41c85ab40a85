"""The workers: the process and transport wrapper around the engine.

`workers.app` / `workers.tasks` are the Celery side (distributed mode, `tokentree worker`);
`workers.local.LocalWorker` runs the same units in a thread of the API's process (embedded mode).
Both drive `workers.tree_jobs` / `workers.logprobs_jobs` over a frontier (`workers.frontier`:
Redis or in memory), writing through `models.node_writes`.
"""

import os

# A worker's model thread shares the CPU with its node writer (a process, or a thread) and, on one
# machine, with the database. OpenMP's default is to keep idle threads spinning, which then starves
# both: torch on two threads measured 20x slower than on one. Passive threads sleep instead. It must
# be set before torch loads OpenMP, hence here, where every worker module is imported first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
