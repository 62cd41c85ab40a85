"""Errors every command reports the same way: one line on stderr, exit status 2."""

USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake of the user's, reported as one line with exit status 2."""
