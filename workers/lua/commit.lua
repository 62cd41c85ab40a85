-- A written step, on the frontier: the popped nodes leave it, the children join it held by the unit,
-- and nodes recovered from a dead unit's written steps join the queue. A unit whose lease expired
-- holds nothing: its children go to the queue. The first children its next step runs on are in flight.
-- ARGV: unit, lease ttl_ms, key_ttl_ms, n_popped, n_children, n_recovered, idle_window_ms, worker,
-- n_children_in_flight, ids...
-- Returns {open count, idle peers, alive (1/0), children held elsewhere}.
local unit = ARGV[1]
local alive = redis.call('ZSCORE', units, unit)
local np, nc, nr = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 10
for k = 1, np do
  local id = ARGV[i]; i = i + 1
  redis.call('SREM', open, id)
  redis.call('HDEL', in_flight, id)
  if redis.call('HGET', holder, id) == unit then redis.call('HDEL', holder, id) end
end
local not_held = {}
for k = 1, nc do
  local id = ARGV[i]; i = i + 1
  redis.call('SADD', open, id)
  if alive then
    if redis.call('HSETNX', holder, id, unit) == 0 and redis.call('HGET', holder, id) ~= unit then
      table.insert(not_held, id)
    elseif k <= tonumber(ARGV[9]) then
      redis.call('HSET', in_flight, id, unit)
    end
  else
    if redis.call('HEXISTS', holder, id) == 0 then redis.call('RPUSH', queue, id) end
    table.insert(not_held, id)
  end
end
for k = 1, nr do
  local id = ARGV[i]; i = i + 1
  if redis.call('SADD', open, id) == 1 then redis.call('RPUSH', queue, id) end
end
if alive then redis.call('ZADD', units, now + tonumber(ARGV[2]), unit) end
for _, key in ipairs({open, holder, units, queue, in_flight}) do redis.call('PEXPIRE', key, ARGV[3]) end
local window = now - tonumber(ARGV[7])
local idle_peers = redis.call('ZCOUNT', idle, window, '+inf')
local mine = redis.call('ZSCORE', idle, ARGV[8])
if mine and tonumber(mine) >= window then idle_peers = idle_peers - 1 end  -- never count oneself
return {redis.call('SCARD', open), idle_peers, alive and 1 or 0, not_held}
