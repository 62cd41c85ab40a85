"""A job's frontier (its open nodes) as the workers share it: in Redis, or in memory for the embedded mode.

Postgres holds the tree; the frontier only says which open node is where. Per job:

- `open`: a SET of every open node id. Its size is the job's queue depth |Q|, whoever holds the nodes.
  A set, not a counter: adding or removing a node twice (a redelivered step) changes nothing.
- `queue`: a LIST, the shared FIFO of open nodes nobody holds. Stale entries (a node popped since, or
  pushed twice) are skipped when leased, so the list never needs to be exact.
- `holder`: a HASH node -> unit, for the nodes a unit of work holds (leased, or created by it).
- `units`: a ZSET unit -> lease expiry (Redis server time, ms). A unit's heartbeat renews its expiry;
  a unit that stops renewing loses every node it holds to the queue within seconds (`expire`).
- `in_flight`: a HASH node -> unit, for the held nodes whose step is in flight (the model about to run
  on them, until the step is committed or they are given back). A node taken back from a dead unit counts
  an attempt (`attempts` HASH) only if it was in flight, so a node that kills every worker that steps it
  fails its job instead of looping forever, and a worker killed for another reason costs nothing.
- `ready`: set once the frontier was loaded from Postgres, so a lost Redis state (a restart) is
  noticed and rebuilt from the nodes table (nodes neither expanded nor finished).

A logprobs job, which runs as one piece, is a frontier of one node (0, the job itself): leased, renewed,
taken back from a dead worker and counted as an attempt exactly as a tree's nodes are.

Every operation that moves nodes is one Lua script (workers/lua/), so no crash leaves a node both queued
and held, or open and nowhere. Keys expire a day after their last write, so an abandoned job leaves
nothing behind.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tokentree.models.jobs import JobId, as_job_id

KEY_TTL_MS = 86_400_000


@dataclass(frozen=True)
class Leased:
    node_ids: list[int]
    open_count: int


@dataclass
class HeldLease:
    """A unit's lease as its keeper sees it: `lost` turns true when a renewal found it expired."""

    job_id: str
    unit: str
    lost: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class FrontierCommit:
    """A unit's written step, for the frontier: nodes popped, children created (held by the unit), and
    open nodes recovered from steps written by a unit that died before committing them (queued)."""

    job_id: str
    unit: str
    popped: list[int]
    children: list[int]
    recovered: list[int]
    ttl_s: float
    model: str = "-"
    children_in_flight: int = 0  # the first children, which the unit's next step runs on (`in_flight`)


@dataclass(frozen=True)
class Committed:
    """The frontier right after a unit's commit, as the unit sees it."""

    open_count: int
    idle_peers: int
    alive: bool  # False: the unit's lease had expired; its nodes went back to the queue
    not_held: list[int] = field(default_factory=list)  # children another unit holds already


@dataclass(frozen=True)
class Expired:
    requeued: list[int]
    poisoned: dict[int, int]  # node -> attempts, for nodes at the attempt limit
    live_units: int


@dataclass(frozen=True)
class Snapshot:
    ready: bool
    units: int
    expired_units: int  # units whose lease expired (their nodes are not taken back yet)


def worker_redis(url: str) -> redis.Redis:
    """A worker's connection to Redis: bounded waits, and a dead connection noticed within 30 s."""
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30)


def job_key(job_id: JobId, name: str) -> str:
    return f"tokentree:job:{as_job_id(job_id)}:{name}"


def idle_key(model: str) -> str:
    """The workers serving `model` that wait for work: worker name -> last heartbeat (ms)."""
    return f"tokentree:model:{model}:idle"


IDLE_WINDOW_MS = 3_000

# The keys every script gets, in this order (workers/lua/prelude.lua names them): the job's own keys,
# and its model's idle workers.
SCRIPT_KEYS = ("queue", "open", "holder", "units", "attempts", "ready", "init", "in_flight")
_LUA = Path(__file__).with_name("lua")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisFrontier:
    """The frontier of the distributed mode, shared by every worker through Redis. Every operation that
    moves nodes is one script in workers/lua/."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        prelude = (_LUA / "prelude.lua").read_text()
        self._scripts = {path.stem: client.register_script(prelude + path.read_text())
                         for path in _LUA.glob("*.lua") if path.stem != "prelude"}

    def _run(self, script: str, job_id: JobId, args: Sequence[str | int], model: str = "-",
             client: Any = None) -> Any:
        keys = [*(job_key(job_id, name) for name in SCRIPT_KEYS), idle_key(model)]
        return self._scripts[script](keys=keys, args=args, client=client)

    def now_ms(self) -> int:
        """Redis' clock (ms), the scripts' `now`: idle marks stamped with it compare alike on every host."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def ready(self, job_id: JobId) -> bool:
        return bool(self.redis.exists(job_key(job_id, "ready")))

    def try_lock_init(self, job_id: JobId, owner: str, ttl_s: float) -> bool:
        return bool(self.redis.set(job_key(job_id, "init"), owner, nx=True, px=_ms(ttl_s)))

    def load(self, job_id: JobId, open_ids: list[int], held_by: str | None = None, ttl_s: float = 0) -> None:
        """Replace the job's frontier with `open_ids` (a rebuild from Postgres): all queued in this order,
        or all held by the unit `held_by` (with a lease of `ttl_s`)."""
        self._run("load", job_id, [held_by or "", _ms(ttl_s), KEY_TTL_MS, *open_ids])

    def lease(self, job_id: JobId, unit: str, count: int, ttl_s: float) -> Leased:
        got, open_count = self._run("lease", job_id, [unit, count, _ms(ttl_s), KEY_TTL_MS])
        return Leased([int(i) for i in got], int(open_count))

    def commit(self, commits: Sequence[FrontierCommit]) -> list[Committed]:
        """Commit written steps (of any jobs and units) to the frontier, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for c in commits:
            worker = c.unit.rsplit(":", 1)[0]  # units are named worker:random
            args: list[str | int] = [c.unit, _ms(c.ttl_s), KEY_TTL_MS, len(c.popped), len(c.children),
                                     len(c.recovered), IDLE_WINDOW_MS, worker, c.children_in_flight,
                                     *c.popped, *c.children, *c.recovered]
            self._run("commit", c.job_id, args, c.model, client=pipe)
        return [Committed(int(open_count), idle_peers=int(idle), alive=bool(alive),
                          not_held=[int(i) for i in not_held])
                for open_count, idle, alive, not_held in pipe.execute()]

    def mark_in_flight(self, job_id: JobId, unit: str, node_ids: Sequence[int]) -> None:
        """Mark held nodes as stepped now (the model is about to run on them), until their step is
        committed or they are given back: if the unit dies meanwhile, they count an attempt."""
        key, pipe = job_key(job_id, "in_flight"), self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={str(node): unit for node in node_ids})
        pipe.pexpire(key, KEY_TTL_MS)
        pipe.execute()

    def release(self, job_id: JobId, unit: str, node_ids: list[int], *, end_unit: bool = False,
                failed: bool = False) -> int:
        """Give held nodes back to the queue; with `failed`, count an attempt on each and return the
        most attempts any of them has had."""
        return int(self._run("release", job_id, [unit, int(end_unit), int(failed), *node_ids]))

    def renew(self, leases: Sequence[HeldLease], ttl_s: float) -> list[bool]:
        """Renew the leases of units, in one round trip; False for each that had expired."""
        pipe = self.redis.pipeline(transaction=False)
        for lease in leases:
            self._run("renew", lease.job_id, [lease.unit, _ms(ttl_s)], client=pipe)
        return [bool(renewed) for renewed in pipe.execute()]

    def expire(self, job_id: JobId, max_attempts: int) -> Expired:
        requeued, poisoned, live = self._run("expire", job_id, [max_attempts])
        pairs = {int(poisoned[i]): int(poisoned[i + 1]) for i in range(0, len(poisoned), 2)}
        return Expired(requeued=[int(i) for i in requeued], poisoned=pairs, live_units=int(live))

    def snapshot(self, job_ids: Sequence[JobId]) -> list[Snapshot]:
        """Many jobs' frontiers at a glance, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            self._run("snapshot", job_id, [], client=pipe)
        return [Snapshot(bool(ready), int(live), int(dead)) for ready, live, dead in pipe.execute()]

    def clear(self, job_id: JobId) -> None:
        self.redis.delete(*(job_key(job_id, name) for name in SCRIPT_KEYS))


@dataclass
class _MemoryJob:
    queue: deque[int] = field(default_factory=deque)
    open: set[int] = field(default_factory=set)
    holder: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)


class MemoryFrontier:
    """The embedded mode's frontier: what a unit of work needs of `RedisFrontier`, on plain Python objects.

    One process, one unit at a time: nothing outlives the process, so leases never expire here; a
    restarted process rebuilds the frontier from the database, as a worker does after Redis lost its state.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, _MemoryJob] = {}
        self._lock = threading.Lock()

    def _job(self, job_id: JobId) -> _MemoryJob | None:
        return self._jobs.get(str(as_job_id(job_id)))

    def ready(self, job_id: JobId) -> bool:
        with self._lock:
            return self._job(job_id) is not None

    def try_lock_init(self, job_id: JobId, owner: str, ttl_s: float) -> bool:
        return True

    def load(self, job_id: JobId, open_ids: list[int], held_by: str | None = None, ttl_s: float = 0) -> None:
        with self._lock:
            job = _MemoryJob(open=set(open_ids))
            if held_by is None:
                job.queue.extend(open_ids)
            else:
                job.holder = dict.fromkeys(open_ids, held_by)
            self._jobs[str(as_job_id(job_id))] = job

    def lease(self, job_id: JobId, unit: str, count: int, ttl_s: float) -> Leased:
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return Leased([], 0)
            got: list[int] = []
            while job.queue and len(got) < count:
                node = job.queue.popleft()
                if node in job.open and node not in job.holder:
                    job.holder[node] = unit
                    got.append(node)
            return Leased(got, len(job.open))

    def commit(self, commits: Sequence[FrontierCommit]) -> list[Committed]:
        with self._lock:
            return [self._commit(c) for c in commits]

    def _commit(self, c: FrontierCommit) -> Committed:
        job = self._job(c.job_id)
        if job is None:
            return Committed(0, 0, False, list(c.children))
        for node in c.popped:
            job.open.discard(node)
            if job.holder.get(node) == c.unit:
                del job.holder[node]
        not_held = []
        for node in c.children:
            job.open.add(node)
            if job.holder.setdefault(node, c.unit) != c.unit:
                not_held.append(node)
        for node in c.recovered:
            if node not in job.open:
                job.open.add(node)
                job.queue.append(node)
        return Committed(len(job.open), 0, True, not_held)

    def mark_in_flight(self, job_id: JobId, unit: str, node_ids: Sequence[int]) -> None:
        """Nothing expires in one process: only a failed unit counts attempts."""

    def release(self, job_id: JobId, unit: str, node_ids: list[int], *, end_unit: bool = False,
                failed: bool = False) -> int:
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return 0
            if end_unit:  # and anything else it holds, in id order
                node_ids = node_ids + sorted(n for n, owner in job.holder.items() if owner == unit)
            most = 0
            for node in node_ids:
                if job.holder.get(node) == unit:
                    del job.holder[node]
                    if node in job.open:
                        job.queue.append(node)
                        if failed:
                            job.attempts[node] = most_here = job.attempts.get(node, 0) + 1
                            most = max(most, most_here)
            return most

    def expire(self, job_id: JobId, max_attempts: int) -> Expired:
        """Nothing expires in one process; the nodes at the attempt limit (their units failed)."""
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return Expired([], {}, 0)
            poisoned = {n: a for n, a in job.attempts.items() if a >= max_attempts and n in job.open}
            return Expired([], poisoned, 0)

    def clear(self, job_id: JobId) -> None:
        with self._lock:
            self._jobs.pop(str(as_job_id(job_id)), None)


# What a unit of work needs of a frontier: the distributed mode's or the embedded mode's.
Frontier = RedisFrontier | MemoryFrontier
