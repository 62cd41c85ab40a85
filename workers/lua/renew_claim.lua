-- Renew a unit's claim on a job (ttl_ms > 0), or drop it (ttl_ms = 0).  ARGV: unit, ttl_ms.
-- Returns 1, or 0 if the unit no longer holds the claim.
if redis.call('GET', claim) == ARGV[1] then
  if ARGV[2] == '0' then redis.call('DEL', claim) else redis.call('PEXPIRE', claim, ARGV[2]) end
  return 1
end
return 0
