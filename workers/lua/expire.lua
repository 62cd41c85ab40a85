-- Take back the nodes of units whose lease expired: to the head of the queue, oldest first. Those whose
-- step was in flight count an attempt; those merely held do not. ARGV: max_attempts.
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
      local stepped = redis.call('HGET', in_flight, id) == owner
      redis.call('HDEL', holder, id)
      redis.call('HDEL', in_flight, id)
      if redis.call('SISMEMBER', open, id) == 1 then
        table.insert(requeued, tonumber(id))
        local n = stepped and redis.call('HINCRBY', attempts, id, 1) or 0
        redis.call('PEXPIRE', attempts, 86400000)
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
