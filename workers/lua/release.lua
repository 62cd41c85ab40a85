-- Give held nodes back to the queue in the order given; ending the unit also gives back anything
-- else it still holds (in id order), so no slip of a unit can leave a node held by nobody alive.
-- With `failed`, count an attempt on each node given back.
-- ARGV: unit, end_unit (1/0), failed (1/0), node ids...  Returns the most attempts of any given back.
local unit = ARGV[1]
local most = 0
local function give_back(id)
  redis.call('HDEL', holder, id)
  redis.call('HDEL', in_flight, id)
  if redis.call('SISMEMBER', open, id) == 1 then
    redis.call('RPUSH', queue, id)
    if ARGV[3] == '1' then
      most = math.max(most, redis.call('HINCRBY', attempts, id, 1))
      redis.call('PEXPIRE', attempts, 86400000)
    end
  end
end
for i = 4, #ARGV do
  if redis.call('HGET', holder, ARGV[i]) == unit then give_back(ARGV[i]) end
end
if ARGV[2] == '1' then
  redis.call('ZREM', units, unit)
  local left = {}
  local all = redis.call('HGETALL', holder)
  for i = 1, #all, 2 do
    if all[i + 1] == unit then table.insert(left, tonumber(all[i])) end
  end
  table.sort(left)
  for _, id in ipairs(left) do give_back(id) end
end
return most
