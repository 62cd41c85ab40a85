-- The frontier at a glance, for the sweeper.
-- Returns {ready (1/0), open count, queue length, units, units whose lease has expired}.
return {redis.call('EXISTS', ready), redis.call('SCARD', open), redis.call('LLEN', queue),
        redis.call('ZCARD', units), redis.call('ZCOUNT', units, '-inf', now)}
