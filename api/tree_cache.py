"""Rendered trees: finished jobs' kept in memory, and every render done once however many ask at once.

A finished job's nodes never change, and reading and writing a 100,000-node tree costs seconds and a few
hundred MB that a second viewer need not spend. Invariants: the kept documents stay within their byte
budget; at any moment at most one render per document (job, subtree root, depth limit; a running job's
partial tree apart from its final one) is in flight, and whoever asks for it meanwhile waits for that
render's result instead of rendering it again; only a render takes a slot (`admit`), never a document
served from memory or from another's render.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

TreeKey = tuple[uuid.UUID, int | None, int | None, int]  # job, subtree root, depth limit, growths


class RenderedTrees:
    """A least-recently-used map of tree documents, bounded by their total size in bytes, and the renders
    in flight."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._documents: OrderedDict[TreeKey, bytes] = OrderedDict()
        self._size = 0
        # A partial tree (its job still running) never joins the render of the final one, nor the reverse.
        self._flights: dict[tuple[TreeKey, bool], Future[bytes]] = {}
        self._lock = threading.Lock()

    def get(self, key: TreeKey) -> bytes | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: TreeKey) -> bytes | None:
        document = self._documents.get(key)
        if document is not None:
            self._documents.move_to_end(key)
        return document

    def put(self, key: TreeKey, document: bytes) -> None:
        # One tree may not push out everything else.
        if len(document) > self.max_bytes // 4:
            return
        with self._lock:
            old = self._documents.pop(key, None)
            self._size -= len(old) if old is not None else 0
            self._documents[key] = document
            self._size += len(document)
            while self._size > self.max_bytes:
                _, dropped = self._documents.popitem(last=False)
                self._size -= len(dropped)

    def forget(self, job_id: uuid.UUID) -> None:
        """Drop every document of a job (it was deleted)."""
        with self._lock:
            for key in [k for k in self._documents if k[0] == job_id]:
                self._size -= len(self._documents.pop(key))

    def document(self, key: TreeKey, *, final: bool, render: Callable[[], bytes],
                 admit: Callable[[], Callable[[], None]]) -> bytes:
        """The document at `key`: a kept one (`final`: the job has finished, so it is kept), else the
        result of the render in flight for it, else `render()`'s, rendered once `admit()` gives a slot
        (it raises to refuse; it returns the function that frees the slot). Whoever waits for another's
        render gets its result or its exception."""
        flight_key = (key, final)
        with self._lock:
            if final and (kept := self._get(key)) is not None:
                return kept
            flight = self._flights.get(flight_key)
            leading = flight is None
            if flight is None:
                free_slot = admit()  # a refusal leaves nothing in flight
                flight = self._flights[flight_key] = Future()
        if not leading:
            return flight.result()
        try:
            document = render()
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            if final:
                self.put(key, document)
            flight.set_result(document)
            return document
        finally:
            free_slot()
            with self._lock:
                del self._flights[flight_key]
