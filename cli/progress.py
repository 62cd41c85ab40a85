"""The progress bar of long expansions, on stderr."""

from __future__ import annotations

from types import TracebackType

from tqdm import tqdm

from tokentree.engine.expand import BatchProgress


class TreeProgressBar:
    """Nodes as the count (of every tree); trees done, frontier, completed paths and the current
    threshold beside it."""

    def __init__(self, disable: bool = False, trees: int = 1) -> None:
        self._bar = tqdm(unit=" nodes", desc="expanding", disable=disable, leave=False, dynamic_ncols=True)
        self._trees = trees

    def update(self, progress: BatchProgress) -> None:
        self._bar.update(progress.nodes - self._bar.n)
        threshold = "-" if progress.threshold is None else f"{progress.threshold:.3f}"
        trees = f"trees {progress.trees_done}/{self._trees}, " if self._trees > 1 else ""
        self._bar.set_postfix_str(
            f"{trees}frontier {progress.frontier}, completed {progress.completed_paths}, "
            f"depth {progress.depth}, T {threshold}",
            refresh=False,
        )

    def __enter__(self) -> TreeProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.refresh()  # a run shorter than tqdm's refresh interval still shows its last state once
        self._bar.close()
