-- A run whose arq job is parked joins its principal's queue; then dispatch.
-- ARGV[4] run id  ARGV[5] principal  ARGV[6] the principal's concurrent-run limit (0 = none)
-- ARGV[7] slot hold ms (the run's timeout and a grace)
-- Returns how many runs were dispatched.
local rid, p = ARGV[4], ARGV[5]
redis.call('ZREM', k('reserved:' .. p), rid)
redis.call('RPUSH', pending(p), rid)
redis.call('HSET', k('owner'), rid, p)
redis.call('HSET', k('hold'), rid, ARGV[7])
redis.call('HSET', k('limits'), p, ARGV[6])
if not redis.call('ZSCORE', k('ring'), p) then
  redis.call('ZADD', k('ring'), tonumber(redis.call('HGET', k('served'), p) or '0'), p)
end
return dispatch()
