-- Admit one submission under the principal's quotas, or say which quota refused it.
-- ARGV[4] run id  ARGV[5] principal  ARGV[6] submissions per minute (0 = no limit)
-- ARGV[7] queued runs (0 = no limit)  ARGV[8] reservation TTL ms  ARGV[9] rate window ms
-- ARGV[10] retry hint ms when the queue is full and no dispatch gap is known yet
-- Returns {'ok', 0}, {'rate', retry ms} or {'queued', retry ms}.
local rid, p = ARGV[4], ARGV[5]
local per_window, max_queued = tonumber(ARGV[6]), tonumber(ARGV[7])
local ttl, window, fallback = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local subs, reserved = k('subs:' .. p), k('reserved:' .. p)

redis.call('ZREMRANGEBYSCORE', subs, '-inf', NOW - window)
if per_window > 0 then
  local count = redis.call('ZCARD', subs)
  if count >= per_window then
    -- The submission whose expiry brings the count below the limit.
    local oldest = redis.call('ZRANGE', subs, count - per_window, count - per_window, 'WITHSCORES')
    return {'rate', tonumber(oldest[2]) + window - NOW}
  end
end
redis.call('ZREMRANGEBYSCORE', reserved, '-inf', NOW)
if max_queued > 0 and redis.call('LLEN', pending(p)) + redis.call('ZCARD', reserved) >= max_queued then
  -- A queue place frees when one of the principal's runs is dispatched: about one gap.
  return {'queued', tonumber(redis.call('HGET', k('gap'), p) or fallback)}
end
redis.call('ZADD', subs, NOW, rid)
redis.call('PEXPIRE', subs, window)
redis.call('ZADD', reserved, NOW + ttl, rid)
redis.call('PEXPIRE', reserved, ttl)
return {'ok', 0}
