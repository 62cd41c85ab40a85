"""The live workers, as their own heartbeats tell them (Redis), and the names they hold.

Every worker process keeps one key, `tokentree:worker:<name>`, holding what it is (name, models, host,
pid, state, last beat) and expiring `heartbeat_ttl_s` after its last beat. Claiming that key (SET NX)
is how a worker takes its name: a second worker with a live worker's name is refused. A sorted set,
`tokentree:workers`, indexes the names by last beat (on Redis' clock), so readers (`tokentree status`,
/metrics, job progress) find the live ones without scanning Redis; a name whose key has expired is not live.

The API, the CLI and the workers all read these keys: the names are here, in one place, and nothing
here imports the workers (the API may not).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis

KEY_PREFIX = "tokentree:worker:"
INDEX_KEY = "tokentree:workers"
# Index entries this much older than their key's TTL are pruned by the beats of other workers.
INDEX_KEEP_S = 3600.0

# Renew the key if it is still ours (same token) or gone; 0 when another worker holds the name now.
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['token'] ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""
# Index a name by its last beat on Redis' clock, and forget names silent for ARGV[2] s: every worker's beats
# compare on one clock (a worker whose clock was an hour behind vanished from the index at its peers' beats).
_INDEX = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
"""
# Delete the key only if it is still ours.
_RELEASE = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def worker_key(name: str) -> str:
    """The key a live worker named `name` keeps alive with its heartbeat."""
    return f"{KEY_PREFIX}{name}"


@dataclass(frozen=True)
class WorkerBeat:
    """What a worker says of itself on each heartbeat."""

    name: str
    models: tuple[str, ...]
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    # starting (loading models), idle, busy (running a unit), waiting (a unit waits for an unreachable
    # Postgres or Redis to answer again), stopping
    state: str = "starting"
    started: float = field(default_factory=time.time)
    beat: float = field(default_factory=time.time)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells this process's key from another's
    # model -> its fingerprint (`engine.loading.model_fingerprint`), once loaded: a job started on another
    # fingerprint is refused by this worker.
    fingerprints: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "models": list(self.models)})

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerBeat:
        data: dict[str, Any] = json.loads(raw)
        return cls(name=str(data["name"]), models=tuple(data.get("models") or ()), host=str(data["host"]),
                   pid=int(data["pid"]), state=str(data.get("state", "")), started=float(data["started"]),
                   beat=float(data["beat"]), token=str(data["token"]),
                   fingerprints={str(k): str(v) for k, v in (data.get("fingerprints") or {}).items()})

    def now(self, state: str | None = None, fingerprints: dict[str, str] | None = None) -> WorkerBeat:
        """This beat again, at this instant (and in `state`, with the loaded models' `fingerprints`)."""
        return replace(self, beat=time.time(), state=state or self.state,
                       fingerprints=self.fingerprints if fingerprints is None else fingerprints)

    def describe(self, now: float | None = None) -> str:
        """`gpu-1-412: demo, small (busy; host gpu-1, pid 412, last beat 0.4 s ago)`."""
        ago = max(0.0, (now or time.time()) - self.beat)
        models = ", ".join(self.models) or "no models"
        return (f"{self.name}: {models} ({self.state}; host {self.host}, pid {self.pid}, "
                f"last beat {ago:.1f} s ago)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: WorkerBeat, me: WorkerBeat | None = None) -> bool:
    """Whether a key still held names a process that is gone: one of this host whose pid is dead, or
    this very pid under another token (a container restarted with the same host name and pid 1)."""
    if holder.host != socket.gethostname():
        return False
    if me is not None and holder.token == me.token:
        return False
    return holder.pid == os.getpid() or not _pid_alive(holder.pid)


def holder_of(client: redis.Redis, name: str) -> WorkerBeat | None:
    """The live worker holding `name`, or None."""
    raw = client.get(worker_key(name))
    return None if raw is None else WorkerBeat.from_json(raw)


class NameTaken(RuntimeError):
    """Another live worker has this worker's name."""

    def __init__(self, holder: WorkerBeat) -> None:
        super().__init__(name_taken(holder))
        self.holder = holder


def claim(client: redis.Redis, beat: WorkerBeat, ttl_s: float) -> None:
    """Take the beat's name for this worker (SET NX with a TTL); NameTaken if a live worker has it.

    A key left by a dead process of this host (see `is_stale`) is taken over."""
    key, ttl_ms = worker_key(beat.name), max(1, int(ttl_s * 1000))
    for _ in range(5):
        if client.set(key, beat.to_json(), nx=True, px=ttl_ms):
            _index(client, beat)
            return None
        raw = client.get(key)
        if raw is None:
            continue  # it expired meanwhile: try again
        holder = WorkerBeat.from_json(raw)
        if holder.token == beat.token:
            return None
        if not is_stale(holder, beat):
            raise NameTaken(holder)
        with client.pipeline() as pipe:  # replace the stale key, unless it changed meanwhile
            try:
                pipe.watch(key)
                if pipe.get(key) == raw:
                    pipe.multi()
                    pipe.set(key, beat.to_json(), px=ttl_ms)
                    pipe.execute()
                    _index(client, beat)
                    return None
            except redis.WatchError:
                pass
    now = holder_of(client, beat.name)
    if now is not None and now.token != beat.token:
        raise NameTaken(now)
    return None


def renew(client: redis.Redis, beat: WorkerBeat, ttl_s: float) -> bool:
    """Renew this worker's key with `beat` (a fresh one if it expired meanwhile, e.g. Redis restarted
    empty); False when another worker has taken the name since."""
    ok = client.eval(_RENEW, 1, worker_key(beat.name), beat.to_json(), beat.token,
                     str(max(1, int(ttl_s * 1000))))
    if ok:
        _index(client, beat)
    return bool(ok)


def release(client: redis.Redis, beat: WorkerBeat) -> None:
    """Give the name back (a clean stop): the worker is gone at once, not after its TTL."""
    client.eval(_RELEASE, 1, worker_key(beat.name), beat.token)
    client.zrem(INDEX_KEY, beat.name)


def _index(client: redis.Redis, beat: WorkerBeat) -> None:
    client.eval(_INDEX, 1, INDEX_KEY, beat.name, str(INDEX_KEEP_S))


def live_workers(client: redis.Redis) -> list[WorkerBeat]:
    """The workers whose heartbeat key is alive, by name."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in client.zrange(INDEX_KEY, 0, -1)]
    if not names:
        return []
    raws = client.mget([worker_key(name) for name in names])
    return sorted((WorkerBeat.from_json(raw) for raw in raws if raw is not None), key=lambda b: b.name)


def served_models(workers: Iterable[WorkerBeat]) -> set[str]:
    """The models at least one of these workers serves."""
    return {model for worker in workers for model in worker.models}


def unserved(models: Iterable[str], workers: Iterable[WorkerBeat]) -> list[str]:
    """The models (in their order) that none of these workers serves."""
    served = served_models(workers)
    return [model for model in models if model not in served]


def name_taken(holder: WorkerBeat) -> str:
    """Why a worker may not start with the name `holder` has."""
    return (f"a live worker is already named {holder.name!r} (pid {holder.pid} on {holder.host}, "
            f"{holder.state}); give this one another --name")


def no_worker_warning(model: str, fingerprint: str | None, workers: Iterable[WorkerBeat]) -> str | None:
    """What a queued or running job says in its progress when no live worker can take it: none serves its
    model, or those that do have another model under that name than the one the job was started with
    (they refuse its nodes). None when some worker can (or may: one still loading the model)."""
    serving = [w for w in workers if model in w.models]
    if not serving:
        return f"no live worker serves model {model}"
    theirs = {w.fingerprints.get(model) for w in serving}
    if fingerprint is None or fingerprint in theirs or None in theirs:
        return None
    others = ", ".join(sorted(str(f) for f in theirs))
    return (f"no live worker has the model this job was started with ({model} fingerprinted {fingerprint}); "
            f"the workers serving {model} have {others} and refuse its nodes")
