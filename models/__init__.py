"""The database schema: jobs and the nodes of their trees. Alembic's migrations/ follow it."""

from tokentree.models.schema import JOB_KINDS, JOB_STATUSES, TERMINAL_STATUSES, Base, Job, NodeRow

__all__ = ["JOB_KINDS", "JOB_STATUSES", "TERMINAL_STATUSES", "Base", "Job", "NodeRow"]
