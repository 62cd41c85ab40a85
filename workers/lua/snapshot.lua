-- The frontier at a glance, for the sweeper.
-- Returns {ready (1/0), units, units whose lease has expired}.
return {redis.call('EXISTS', ready), redis.call('ZCARD', units), redis.call('ZCOUNT', units, '-inf', now)}
