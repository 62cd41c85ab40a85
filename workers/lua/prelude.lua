-- Put before every script of workers/frontier.py. Every script gets the same keys, in the order of
-- `frontier.SCRIPT_KEYS`; here they get their names. `now` is the Redis server's clock in ms, so
-- workers on several hosts agree on when a lease expires.
local queue, open, holder, units, attempts, ready, init, in_flight, idle = unpack(KEYS)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
