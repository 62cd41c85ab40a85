"""A job's frontier (its open nodes) as the workers share it: in Redis, or in memory for the embedded mode.

Postgres holds the tree; the frontier only says which open node is where. Per job:

- `open`: a SET of every open node id. Its size is the job's queue depth |Q|, whoever holds the nodes.
  A set, not a counter: adding or removing a node twice (a redelivered step) changes nothing.
- `queue`: a LIST, the shared FIFO of open nodes nobody holds. Stale entries (a node popped since, or
  pushed twice) are skipped when leased, so the list never needs to be exact.
- `holder`: a HASH node -> unit, for the nodes a unit of work holds (leased, or created by it).
- `units`: a ZSET unit -> lease expiry (Redis server time, ms). A unit's heartbeat renews its expiry;
  a unit that stops renewing loses every node it holds to the queue within seconds (`expire`), and
  each node taken back that way counts an attempt (`attempts` HASH) so a node that kills every worker
  that touches it fails its job instead of looping forever.
- `ready`: set once the frontier was loaded from Postgres, so a lost Redis state (a restart) is
  noticed and rebuilt from the nodes table (nodes neither expanded nor finished).

Every operation that moves nodes is one Lua script, so no crash leaves a node both queued and held, or
open and nowhere. Keys expire a day after their last write, so an abandoned job leaves nothing behind.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import redis

from models.jobs import JobId, as_job_id, cancel_flag_key

KEY_TTL_MS = 86_400_000


@dataclass(frozen=True)
class Leased:
    node_ids: list[int]
    open_count: int
    queue_length: int


@dataclass(frozen=True)
class Committed:
    """The frontier right after a unit's commit, as the unit sees it."""

    open_count: int
    queue_length: int
    cancelled: bool
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
    open_count: int
    queue_length: int
    live_units: int


class Frontier(Protocol):
    """What the tree-job service needs of a frontier; Redis and in-memory implementations follow."""

    def ready(self, job_id: JobId) -> bool: ...

    def try_lock_init(self, job_id: JobId, owner: str, ttl_s: float) -> bool: ...

    def load(self, job_id: JobId, open_ids: list[int]) -> None: ...

    def lease(self, job_id: JobId, unit: str, count: int, ttl_s: float) -> Leased: ...

    def commit(self, job_id: JobId, unit: str, popped: list[int], children: list[int], recovered: list[int],
               ttl_s: float, model: str | None = None) -> Committed: ...

    def release(self, job_id: JobId, unit: str, node_ids: list[int], *, end_unit: bool = False,
                failed: bool = False) -> int: ...

    def renew(self, job_id: JobId, unit: str, ttl_s: float) -> bool: ...

    def expire(self, job_id: JobId, max_attempts: int, *, scan_all: bool = False) -> Expired: ...

    def repair(self, job_id: JobId) -> int: ...

    def snapshot(self, job_id: JobId) -> Snapshot: ...

    def cancelled(self, job_id: JobId) -> bool: ...

    def clear(self, job_id: JobId) -> None: ...

    # A claim on a whole job, for the kinds of job that run as one piece (logprobs).

    def claim(self, job_id: JobId, unit: str, ttl_s: float) -> int | None: ...

    def renew_claim(self, job_id: JobId, unit: str, ttl_s: float) -> bool: ...

    def drop_claim(self, job_id: JobId, unit: str) -> None: ...

    def claimed(self, job_id: JobId) -> bool: ...


def worker_redis(url: str) -> redis.Redis:
    """A worker's connection to Redis: bounded waits, and a dead connection noticed within 30 s."""
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30)


def job_key(job_id: JobId, name: str) -> str:
    return f"tokentree:job:{as_job_id(job_id)}:{name}"


def idle_key(model: str) -> str:
    """The workers serving `model` that wait for work: worker name -> last heartbeat (ms)."""
    return f"tokentree:model:{model}:idle"


IDLE_WINDOW_MS = 3_000

# Lua shared by the scripts: the server's clock in ms, so workers on several hosts agree on expiry.
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: queue, open, holder, units, ready.  ARGV: unit, count, ttl_ms, key_ttl_ms
_LEASE = _NOW + """
local want = tonumber(ARGV[2])
local got = {}
while #got < want do
  local batch = redis.call('LPOP', KEYS[1], want - #got)
  if not batch then break end
  for _, id in ipairs(batch) do
    if redis.call('SISMEMBER', KEYS[2], id) == 1 and redis.call('HSETNX', KEYS[3], id, ARGV[1]) == 1 then
      table.insert(got, id)
    end
  end
end
-- the unit is live from its first lease on, until it ends (or stops renewing)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[1])
for i = 3, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return {got, redis.call('SCARD', KEYS[2]), redis.call('LLEN', KEYS[1])}
"""

# KEYS: open, holder, units, queue, cancel, idle.
# ARGV: unit, ttl_ms, key_ttl_ms, n_popped, n_children, n_recovered, idle_window_ms, worker, ids...
_COMMIT = _NOW + """
local unit = ARGV[1]
local alive = redis.call('ZSCORE', KEYS[3], unit)
local np, nc, nr = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 9
for k = 1, np do
  local id = ARGV[i]; i = i + 1
  redis.call('SREM', KEYS[1], id)
  if redis.call('HGET', KEYS[2], id) == unit then redis.call('HDEL', KEYS[2], id) end
end
local not_held = {}
for k = 1, nc do
  local id = ARGV[i]; i = i + 1
  redis.call('SADD', KEYS[1], id)
  if alive then
    if redis.call('HSETNX', KEYS[2], id, unit) == 0 and redis.call('HGET', KEYS[2], id) ~= unit then
      table.insert(not_held, id)
    end
  else
    -- a unit whose lease expired must not hold anything: nobody would ever take the nodes back
    if redis.call('HEXISTS', KEYS[2], id) == 0 then redis.call('RPUSH', KEYS[4], id) end
    table.insert(not_held, id)
  end
end
for k = 1, nr do
  local id = ARGV[i]; i = i + 1
  if redis.call('SADD', KEYS[1], id) == 1 then redis.call('RPUSH', KEYS[4], id) end
end
if alive then redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), unit) end
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
local idle = redis.call('ZCOUNT', KEYS[6], now - tonumber(ARGV[7]), '+inf')
local mine = redis.call('ZSCORE', KEYS[6], ARGV[8])
if mine and tonumber(mine) >= now - tonumber(ARGV[7]) then idle = idle - 1 end  -- never count oneself
return {redis.call('SCARD', KEYS[1]), redis.call('LLEN', KEYS[4]), redis.call('GET', KEYS[5]) or '', idle,
        alive and 1 or 0, not_held}
"""

# KEYS: open, holder, units, queue, attempts.  ARGV: unit, end_unit, failed, ids...
# Gives the listed nodes back in the order given; ending the unit also gives back anything else it
# still holds (in id order), so no bookkeeping slip of a unit can leave a node held by nobody alive.
# Returns the most attempts any node given back has had (attempts are counted only when `failed`).
_RELEASE = """
local unit = ARGV[1]
local most = 0
local function give_back(id)
  redis.call('HDEL', KEYS[2], id)
  if redis.call('SISMEMBER', KEYS[1], id) == 1 then
    redis.call('RPUSH', KEYS[4], id)
    if ARGV[3] == '1' then
      most = math.max(most, redis.call('HINCRBY', KEYS[5], id, 1))
      redis.call('PEXPIRE', KEYS[5], 86400000)
    end
  end
end
for i = 4, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == unit then give_back(ARGV[i]) end
end
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[3], unit)
  local left = {}
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    if all[i + 1] == unit then table.insert(left, tonumber(all[i])) end
  end
  table.sort(left)
  for _, id in ipairs(left) do give_back(id) end
end
return most
"""

# KEYS: units.  ARGV: unit, ttl_ms
_RENEW = _NOW + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
"""

# KEYS: queue, open, holder, units, attempts.  ARGV: max_attempts, scan_all
_EXPIRE = _NOW + """
local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for _, u in ipairs(dead) do redis.call('ZREM', KEYS[4], u) end
local requeued, poisoned = {}, {}
if #dead > 0 or ARGV[2] == '1' then
  local alive = {}
  for _, u in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do alive[u] = true end
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    local id, owner = all[i], all[i + 1]
    if not alive[owner] then
      redis.call('HDEL', KEYS[3], id)
      if redis.call('SISMEMBER', KEYS[2], id) == 1 then
        local attempts = redis.call('HINCRBY', KEYS[5], id, 1)
        redis.call('PEXPIRE', KEYS[5], 86400000)
        table.insert(requeued, tonumber(id))
        if attempts >= tonumber(ARGV[1]) then
          table.insert(poisoned, id); table.insert(poisoned, attempts)
        end
      end
    end
  end
  -- back to the head, oldest (smallest id) first: they were taken before anything still queued
  table.sort(requeued)
  for i = #requeued, 1, -1 do redis.call('LPUSH', KEYS[1], requeued[i]) end
end
return {requeued, poisoned, redis.call('ZCARD', KEYS[4])}
"""

# KEYS: queue, open, holder.  Requeue open nodes that are neither queued nor held (belt and braces).
_REPAIR = """
local queued = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do queued[id] = true end
local ids = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not queued[id] and redis.call('HEXISTS', KEYS[3], id) == 0 then table.insert(ids, tonumber(id)) end
end
table.sort(ids)
for _, id in ipairs(ids) do redis.call('RPUSH', KEYS[1], id) end
return #ids
"""


# KEYS: claim, claims (attempts).  ARGV: unit, ttl_ms, key_ttl_ms.  The attempt number, or 0 if held.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local n = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return n
end
return 0
"""

# KEYS: claim.  ARGV: unit, ttl_ms (0: drop)
_RENEW_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return 1
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisFrontier:
    """The frontier of the distributed mode, shared by every worker through Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._lease = client.register_script(_LEASE)
        self._commit = client.register_script(_COMMIT)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._expire = client.register_script(_EXPIRE)
        self._repair = client.register_script(_REPAIR)
        self._claim = client.register_script(_CLAIM)
        self._renew_claim = client.register_script(_RENEW_CLAIM)

    @staticmethod
    def _keys(job_id: JobId, *names: str) -> list[str]:
        return [job_key(job_id, name) for name in names]

    def ready(self, job_id: JobId) -> bool:
        return bool(self.redis.exists(job_key(job_id, "ready")))

    def try_lock_init(self, job_id: JobId, owner: str, ttl_s: float) -> bool:
        return bool(self.redis.set(job_key(job_id, "init"), owner, nx=True, px=_ms(ttl_s)))

    def load(self, job_id: JobId, open_ids: list[int]) -> None:
        """Replace the job's frontier with `open_ids`, all queued in this order (a rebuild from Postgres)."""
        queue, open_set, holder, units, ready, init = self._keys(job_id, "queue", "open", "holder", "units",
                                                                 "ready", "init")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(queue, open_set, holder, units)
        for start in range(0, len(open_ids), 10_000):
            chunk = open_ids[start : start + 10_000]
            pipe.rpush(queue, *chunk)
            pipe.sadd(open_set, *chunk)
        pipe.set(ready, "1", px=KEY_TTL_MS)
        for key in (queue, open_set):
            pipe.pexpire(key, KEY_TTL_MS)
        pipe.delete(init)
        pipe.execute()

    def lease(self, job_id: JobId, unit: str, count: int, ttl_s: float) -> Leased:
        keys = self._keys(job_id, "queue", "open", "holder", "units", "ready")
        got, open_count, queue_length = self._lease(keys=keys, args=[unit, count, _ms(ttl_s), KEY_TTL_MS])
        return Leased([int(i) for i in got], int(open_count), int(queue_length))

    def commit(self, job_id: JobId, unit: str, popped: list[int], children: list[int], recovered: list[int],
               ttl_s: float, model: str | None = None) -> Committed:
        keys = [*self._keys(job_id, "open", "holder", "units", "queue"), cancel_flag_key(job_id),
                idle_key(model or "-")]
        worker = unit.rsplit(":", 1)[0]  # units are named worker:random
        args: list[str | int] = [unit, _ms(ttl_s), KEY_TTL_MS, len(popped), len(children), len(recovered),
                                 IDLE_WINDOW_MS, worker, *popped, *children, *recovered]
        open_count, queue_length, cancel, idle, alive, not_held = self._commit(keys=keys, args=args)
        return Committed(open_count=int(open_count), queue_length=int(queue_length), cancelled=cancel == b"1",
                         idle_peers=int(idle), alive=bool(alive), not_held=[int(i) for i in not_held])

    def release(self, job_id: JobId, unit: str, node_ids: list[int], *, end_unit: bool = False,
                failed: bool = False) -> int:
        """Give held nodes back to the queue; with `failed`, count an attempt on each and return the
        most attempts any of them has had."""
        keys = self._keys(job_id, "open", "holder", "units", "queue", "attempts")
        return int(self._release(keys=keys, args=[unit, int(end_unit), int(failed), *node_ids]))

    def renew(self, job_id: JobId, unit: str, ttl_s: float) -> bool:
        return bool(self._renew(keys=self._keys(job_id, "units"), args=[unit, _ms(ttl_s)]))

    def expire(self, job_id: JobId, max_attempts: int, *, scan_all: bool = False) -> Expired:
        keys = self._keys(job_id, "queue", "open", "holder", "units", "attempts")
        requeued, poisoned, live = self._expire(keys=keys, args=[max_attempts, int(scan_all)])
        pairs = {int(poisoned[i]): int(poisoned[i + 1]) for i in range(0, len(poisoned), 2)}
        return Expired(requeued=[int(i) for i in requeued], poisoned=pairs, live_units=int(live))

    def repair(self, job_id: JobId) -> int:
        return int(self._repair(keys=self._keys(job_id, "queue", "open", "holder")))

    def snapshot(self, job_id: JobId) -> Snapshot:
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(job_key(job_id, "ready"))
        pipe.scard(job_key(job_id, "open"))
        pipe.llen(job_key(job_id, "queue"))
        pipe.zcard(job_key(job_id, "units"))
        ready, open_count, queue_length, units = pipe.execute()
        return Snapshot(bool(ready), int(open_count), int(queue_length), int(units))

    def cancelled(self, job_id: JobId) -> bool:
        return self.redis.get(cancel_flag_key(job_id)) == b"1"

    def clear(self, job_id: JobId) -> None:
        self.redis.delete(*self._keys(job_id, "queue", "open", "holder", "units", "attempts", "ready", "init",
                                      "claim", "claims"))

    def claim(self, job_id: JobId, unit: str, ttl_s: float) -> int | None:
        """Claim the whole job; the attempt number (1 for the first claim ever), or None if it is held."""
        n = int(self._claim(keys=self._keys(job_id, "claim", "claims"), args=[unit, _ms(ttl_s), KEY_TTL_MS]))
        return n or None

    def renew_claim(self, job_id: JobId, unit: str, ttl_s: float) -> bool:
        return bool(self._renew_claim(keys=self._keys(job_id, "claim"), args=[unit, _ms(ttl_s)]))

    def drop_claim(self, job_id: JobId, unit: str) -> None:
        self._renew_claim(keys=self._keys(job_id, "claim"), args=[unit, 0])

    def claimed(self, job_id: JobId) -> bool:
        return bool(self.redis.exists(job_key(job_id, "claim")))


@dataclass
class _MemoryJob:
    queue: deque[int] = field(default_factory=deque)
    open: set[int] = field(default_factory=set)
    holder: dict[int, str] = field(default_factory=dict)
    units: set[str] = field(default_factory=set)
    attempts: dict[int, int] = field(default_factory=dict)
    cancelled: bool = False


class MemoryFrontier:
    """The embedded mode's frontier: the same operations on plain Python objects, for one process.

    Nothing outlives the process, so leases never expire here; a restarted process rebuilds the
    frontier from the database, as a worker does after Redis lost its state.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, _MemoryJob] = {}
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._claims: dict[str, str] = {}
        self._claim_counts: dict[str, int] = {}

    def _job(self, job_id: JobId) -> _MemoryJob | None:
        return self._jobs.get(str(as_job_id(job_id)))

    def ready(self, job_id: JobId) -> bool:
        with self._lock:
            return self._job(job_id) is not None

    def try_lock_init(self, job_id: JobId, owner: str, ttl_s: float) -> bool:
        return True

    def load(self, job_id: JobId, open_ids: list[int]) -> None:
        with self._lock:
            self._jobs[str(as_job_id(job_id))] = _MemoryJob(queue=deque(open_ids), open=set(open_ids))

    def lease(self, job_id: JobId, unit: str, count: int, ttl_s: float) -> Leased:
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return Leased([], 0, 0)
            got: list[int] = []
            while job.queue and len(got) < count:
                node = job.queue.popleft()
                if node in job.open and node not in job.holder:
                    job.holder[node] = unit
                    got.append(node)
            if got:
                job.units.add(unit)
            return Leased(got, len(job.open), len(job.queue))

    def commit(self, job_id: JobId, unit: str, popped: list[int], children: list[int], recovered: list[int],
               ttl_s: float, model: str | None = None) -> Committed:
        with self._lock:
            job = self._job(job_id)
            cancelled = str(as_job_id(job_id)) in self._cancelled
            if job is None:
                return Committed(0, 0, cancelled, 0, False, list(children))
            for node in popped:
                job.open.discard(node)
                if job.holder.get(node) == unit:
                    del job.holder[node]
            not_held = []
            for node in children:
                job.open.add(node)
                if job.holder.setdefault(node, unit) != unit:
                    not_held.append(node)
            for node in recovered:
                if node not in job.open:
                    job.open.add(node)
                    job.queue.append(node)
            return Committed(len(job.open), len(job.queue), cancelled, 0, True, not_held)

    def release(self, job_id: JobId, unit: str, node_ids: list[int], *, end_unit: bool = False,
                failed: bool = False) -> int:
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return 0
            most = 0
            for node in node_ids:
                if job.holder.get(node) == unit:
                    del job.holder[node]
                    if node in job.open:
                        job.queue.append(node)
                        if failed:
                            job.attempts[node] = job.attempts.get(node, 0) + 1
                            most = max(most, job.attempts[node])
            if end_unit:
                job.units.discard(unit)
                for node in sorted(n for n, owner in job.holder.items() if owner == unit):
                    del job.holder[node]
                    if node in job.open:
                        job.queue.append(node)
                        if failed:
                            job.attempts[node] = job.attempts.get(node, 0) + 1
                            most = max(most, job.attempts[node])
            return most

    def renew(self, job_id: JobId, unit: str, ttl_s: float) -> bool:
        return True

    def expire(self, job_id: JobId, max_attempts: int, *, scan_all: bool = False) -> Expired:
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return Expired([], {}, 0)
            poisoned = {n: a for n, a in job.attempts.items() if a >= max_attempts and n in job.open}
            return Expired([], poisoned, len(job.units))

    def repair(self, job_id: JobId) -> int:
        return 0

    def snapshot(self, job_id: JobId) -> Snapshot:
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return Snapshot(False, 0, 0, 0)
            return Snapshot(True, len(job.open), len(job.queue), len(job.units))

    def cancel(self, job_id: JobId) -> None:
        with self._lock:
            self._cancelled.add(str(as_job_id(job_id)))

    def cancelled(self, job_id: JobId) -> bool:
        with self._lock:
            return str(as_job_id(job_id)) in self._cancelled

    def clear(self, job_id: JobId) -> None:
        with self._lock:
            self._jobs.pop(str(as_job_id(job_id)), None)

    def claim(self, job_id: JobId, unit: str, ttl_s: float) -> int | None:
        with self._lock:
            key = str(as_job_id(job_id))
            if key in self._claims:
                return None
            self._claims[key] = unit
            self._claim_counts[key] = self._claim_counts.get(key, 0) + 1
            return self._claim_counts[key]

    def renew_claim(self, job_id: JobId, unit: str, ttl_s: float) -> bool:
        return True

    def drop_claim(self, job_id: JobId, unit: str) -> None:
        with self._lock:
            key = str(as_job_id(job_id))
            if self._claims.get(key) == unit:
                del self._claims[key]

    def claimed(self, job_id: JobId) -> bool:
        with self._lock:
            return str(as_job_id(job_id)) in self._claims

