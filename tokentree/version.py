"""The installed tokentree's version (the package metadata's), read once."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokentree")
except PackageNotFoundError:  # run from a source checkout that was never installed
    __version__ = "unknown"
