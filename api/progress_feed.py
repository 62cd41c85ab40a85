"""Progress for event streams, read by one task per API process and handed to every stream.

Invariant: however many event streams are open, this process reads the database for them once per
`events_interval_s` (and once more when a stream opens, so that its first event is not late), in a fixed
number of queries that cover every watched job and every watching key; never once per stream. Each
stream receives that reading's verdict on its own job: the job as `GET /v1/jobs/{id}` shows it, or why
the stream must end (the job deleted, the key revoked, the database unreachable).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
from sqlalchemy.exc import SQLAlchemyError

from tokentree.api.schemas import JobOut

log = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "database unavailable, retry later"
READ_FAILED = "the server could not read the job"
KEY_REVOKED = "the API key was revoked"
JOB_DELETED = "the job was deleted"

# What a stream is told at each reading: its job, or why it ends.
Verdict = JobOut | str


@dataclass(frozen=True)
class Reading:
    """One reading of the watched jobs: each that still exists, by id, and which watching keys are
    still active; or a failure that ends every stream."""

    jobs: dict[uuid.UUID, JobOut] = field(default_factory=dict)
    active_keys: frozenset[str] = frozenset()
    failure: str | None = None

    def verdict(self, job_id: uuid.UUID, key_id: str | None) -> Verdict:
        if self.failure is not None:
            return self.failure
        if key_id is not None and key_id not in self.active_keys:
            return KEY_REVOKED
        return self.jobs.get(job_id, JOB_DELETED)


# Reads the jobs and keys given, in a worker thread (it may block on the database).
ReadWatched = Callable[[set[uuid.UUID], set[str]], Reading]


class Watch:
    """One stream's place in the feed: the latest verdict on its job, until the stream takes it. A
    stream slower than the feed misses intermediate states, never the newest one."""

    def __init__(self, job_id: uuid.UUID, key_id: str | None) -> None:
        self.job_id, self.key_id = job_id, key_id
        self._latest: Verdict | None = None
        self._arrived = anyio.Event()

    def deliver(self, verdict: Verdict) -> None:
        self._latest = verdict
        self._arrived.set()

    async def next(self) -> Verdict:
        """The first verdict delivered since the last call (waits for one)."""
        await self._arrived.wait()
        self._arrived = anyio.Event()
        verdict, self._latest = self._latest, None
        assert verdict is not None
        return verdict


class ProgressFeed:
    """The one reader behind every event stream of this process: `run` (started by the app's lifespan)
    reads for the open watches every `interval_s` while there are any, and nothing while there are none."""

    def __init__(self, read: ReadWatched, interval_s: float) -> None:
        self.read = read
        self.interval_s = interval_s
        self._watches: set[Watch] = set()
        self._wake = anyio.Event()
        self._running = False

    @contextmanager
    def watch(self, job_id: uuid.UUID, key_id: str | None) -> Iterator[Watch]:
        """Watch `job_id` on behalf of `key_id` (None: anonymous) until the block ends."""
        if not self._running:
            # Without the lifespan nobody reads, and the stream would wait forever for its first event.
            raise RuntimeError("the progress feed is not running: serve the app with its lifespan")
        watch = Watch(job_id, key_id)
        self._watches.add(watch)
        self._wake.set()  # read now: the new stream's first event should not wait a whole interval
        try:
            yield watch
        finally:
            self._watches.discard(watch)

    async def run(self) -> None:
        """Read for the open watches until cancelled."""
        self._running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._watches:
                    watches = list(self._watches)
                    reading = await self._read({w.job_id for w in watches},
                                               {w.key_id for w in watches if w.key_id is not None})
                    for watch in watches:
                        watch.deliver(reading.verdict(watch.job_id, watch.key_id))
                    # Streams opened meanwhile (they set the wake) are read for at once.
                    with anyio.move_on_after(self.interval_s):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            self._running = False

    async def _read(self, job_ids: set[uuid.UUID], key_ids: set[str]) -> Reading:
        try:
            return await anyio.to_thread.run_sync(self.read, job_ids, key_ids)
        except SQLAlchemyError as exc:  # every stream ends, saying why; the feed carries on
            log.warning("events: database unavailable: %s", exc)
            return Reading(failure=DATABASE_UNAVAILABLE)
        except Exception:
            # A bug must end the streams visibly, not stop the one reader every stream waits on.
            log.exception("events: reading %d watched jobs failed", len(job_ids))
            return Reading(failure=READ_FAILED)
