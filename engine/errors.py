"""The engine's errors a user meets, importable without torch (the command line imports them always)."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""
