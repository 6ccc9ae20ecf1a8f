-- A worker advertises its slots until ARGV[6] (epoch ms), then dispatch; ARGV[5] = 0 withdraws it.
-- ARGV[4] worker name  ARGV[5] slots  ARGV[6] advertisement expiry (epoch ms)
-- Returns how many runs were dispatched.
if tonumber(ARGV[5]) == 0 then
  redis.call('ZREM', k('workers'), ARGV[4])
  redis.call('HDEL', k('slots'), ARGV[4])
  return 0
end
redis.call('ZADD', k('workers'), ARGV[6], ARGV[4])
redis.call('HSET', k('slots'), ARGV[4], ARGV[5])
return dispatch()
