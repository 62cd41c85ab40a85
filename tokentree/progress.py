"""Progress bars for in-process builds and for waiting on a service's job: `tqdm.auto` (a widget in
Jupyter, text on stderr in a terminal) when tqdm is installed, nothing otherwise."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

try:
    from tqdm.auto import tqdm
except ImportError:  # tqdm comes with transformers; a client-only install may lack it
    tqdm = None


class TreeCounts(Protocol):
    """What a progress report carries: the engine's batch progress and a job's progress both have it."""

    @property
    def nodes(self) -> int: ...

    @property
    def completed_paths(self) -> int: ...


class NodeProgress:
    """Nodes as the count, completed paths (and whatever the caller adds) beside it."""

    def __init__(self, enabled: bool, description: str) -> None:
        self._bar: Any = None
        if enabled and tqdm is not None:
            self._bar = tqdm(unit=" nodes", desc=description, leave=False, dynamic_ncols=True)

    def update(self, counts: TreeCounts, note: str = "") -> None:
        if self._bar is None:
            return
        self._bar.update(counts.nodes - self._bar.n)
        self._bar.set_postfix_str(f"completed {counts.completed_paths}{', ' + note if note else ''}",
                                  refresh=False)

    def __enter__(self) -> NodeProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.refresh()  # a build shorter than tqdm's refresh interval still shows its end once
            self._bar.close()


class JobsProgress:
    """Jobs ended as the count, out of the study's jobs; nodes and completed paths beside it."""

    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self._bar: Any = None
        if enabled and tqdm is not None:
            self._bar = tqdm(unit=" jobs", desc=description, total=total, leave=False, dynamic_ncols=True)

    def update(self, ended: int, counts: TreeCounts) -> None:
        if self._bar is None:
            return
        self._bar.update(ended - self._bar.n)
        self._bar.set_postfix_str(f"nodes {counts.nodes}, completed {counts.completed_paths}", refresh=False)

    def __enter__(self) -> JobsProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()
