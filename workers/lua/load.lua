-- Replace the job's frontier with the open nodes given (a load from Postgres): queued in the order
-- given, or all held by one unit (a unit that started a fresh job holds its root at once).
-- ARGV: holder unit ('' for none), lease ttl_ms, key_ttl_ms, node ids...
local unit = ARGV[1]
redis.call('DEL', queue, open, holder, units, init, in_flight)
for i = 4, #ARGV do
  redis.call('SADD', open, ARGV[i])
  if unit == '' then redis.call('RPUSH', queue, ARGV[i]) else redis.call('HSET', holder, ARGV[i], unit) end
end
if unit ~= '' then redis.call('ZADD', units, now + tonumber(ARGV[2]), unit) end
redis.call('SET', ready, '1', 'PX', ARGV[3])
for _, key in ipairs({queue, open, holder, units}) do redis.call('PEXPIRE', key, ARGV[3]) end
return 1
