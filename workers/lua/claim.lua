-- Claim a whole job for a unit.  ARGV: unit, ttl_ms, key_ttl_ms.
-- Returns the attempt number (1 for the first claim ever), or 0 if another unit holds the claim.
if redis.call('SET', claim, ARGV[1], 'NX', 'PX', ARGV[2]) then
  local n = redis.call('INCR', claims)
  redis.call('PEXPIRE', claims, ARGV[3])
  return n
end
return 0
