-- Take back the nodes of units whose lease expired: to the head of the queue, oldest first, each
-- counting an attempt. ARGV: max_attempts.
-- Returns {requeued ids, {id, attempts, ...} at the limit, live units}.
local dead = redis.call('ZRANGEBYSCORE', units, '-inf', now)
for _, u in ipairs(dead) do redis.call('ZREM', units, u) end
local requeued, poisoned = {}, {}
if #dead > 0 then
  local alive = {}
  for _, u in ipairs(redis.call('ZRANGE', units, 0, -1)) do alive[u] = true end
  local all = redis.call('HGETALL', holder)
  for i = 1, #all, 2 do
    local id, owner = all[i], all[i + 1]
    if not alive[owner] then
      redis.call('HDEL', holder, id)
      if redis.call('SISMEMBER', open, id) == 1 then
        local n = redis.call('HINCRBY', attempts, id, 1)
        redis.call('PEXPIRE', attempts, 86400000)
        table.insert(requeued, tonumber(id))
        if n >= tonumber(ARGV[1]) then
          table.insert(poisoned, id); table.insert(poisoned, n)
        end
      end
    end
  end
  table.sort(requeued)
  for i = #requeued, 1, -1 do redis.call('LPUSH', queue, requeued[i]) end
end
return {requeued, poisoned, redis.call('ZCARD', units)}
