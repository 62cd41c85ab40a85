-- Lease up to `count` queued nodes to a unit. Stale queue entries (a node popped since, or queued
-- twice) are skipped. The unit is live from its first lease on, until it ends or stops renewing.
-- ARGV: unit, count, lease ttl_ms, key_ttl_ms.  Returns {node ids, open count}.
local unit, want = ARGV[1], tonumber(ARGV[2])
local got = {}
while #got < want do
  local batch = redis.call('LPOP', queue, want - #got)
  if not batch then break end
  for _, id in ipairs(batch) do
    if redis.call('SISMEMBER', open, id) == 1 and redis.call('HSETNX', holder, id, unit) == 1 then
      table.insert(got, id)
    end
  end
end
redis.call('ZADD', units, now + tonumber(ARGV[3]), unit)
for _, key in ipairs({holder, units, ready}) do redis.call('PEXPIRE', key, ARGV[4]) end
return {got, redis.call('SCARD', open)}
