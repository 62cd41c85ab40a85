"""Ctrl-C and SIGTERM during a long expansion: stop between batches and keep the work.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be: in the
middle of a batch's update, or of writing the output file. While a `StopRequest` is installed, SIGINT and
SIGTERM only set a flag; the expansion loop asks it before each batch and ends there, so the nodes built
so far form a consistent tree that the command then writes whole. A second signal while a batch runs
(one batch of a large model may take long) quits at once, without writing; once writing has begun,
signals only wait for it to end.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager catching SIGINT and SIGTERM; called, it says whether one came."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.forceable = True  # whether a second signal may still quit without writing
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return "" if self.signal is None else signal.Signals(self.signal).name

    def writing(self) -> None:
        """From now on every signal only waits: what is being written is never cut off."""
        self.forceable = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and self.forceable:
            raise KeyboardInterrupt  # the user insists: main() reports it (one line, exit 130)
        self.signal = signum

    def __enter__(self) -> StopRequest:
        # Only the main thread may set handlers; elsewhere (an embedding caller) the defaults stay.
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                # A signal ignored when we started (a background job of a script, nohup) stays ignored.
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
