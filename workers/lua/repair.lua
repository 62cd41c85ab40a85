-- Queue open nodes that are neither queued nor held (belt and braces).  Returns how many.
local queued = {}
for _, id in ipairs(redis.call('LRANGE', queue, 0, -1)) do queued[id] = true end
local ids = {}
for _, id in ipairs(redis.call('SMEMBERS', open)) do
  if not queued[id] and redis.call('HEXISTS', holder, id) == 0 then table.insert(ids, tonumber(id)) end
end
table.sort(ids)
for _, id in ipairs(ids) do redis.call('RPUSH', queue, id) end
return #ids
