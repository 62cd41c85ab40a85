-- Renew a unit's lease, if it still has one.  ARGV: unit, lease ttl_ms.  Returns 1, or 0 if expired.
if redis.call('ZSCORE', units, ARGV[1]) then
  redis.call('ZADD', units, now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
