"""Rendered trees of finished jobs, kept in memory: a finished job's nodes never change, and reading
and writing a 10,000-node tree costs a few hundred milliseconds that a second viewer need not wait."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

TreeKey = tuple[uuid.UUID, int | None, int | None]  # job, subtree root, depth limit


class RenderedTrees:
    """A least-recently-used map of tree documents, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._documents: OrderedDict[TreeKey, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: TreeKey) -> bytes | None:
        with self._lock:
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
