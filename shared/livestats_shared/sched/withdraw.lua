-- Cancel of a run that has not started: take it out of wherever it waits.
-- ARGV[4] run id  ARGV[5] its arq job key  ARGV[6] its arq in-progress key
-- Returns 'pending' (taken from its principal's queue), 'dispatched' (taken from arq's queue before
-- a worker started it; its slot is freed) or '' (not waiting: running, finished or unknown).
local rid = ARGV[4]
local p = redis.call('HGET', k('owner'), rid)
if not p then return '' end
if redis.call('LREM', pending(p), 0, rid) > 0 then
  redis.call('HDEL', k('owner'), rid)
  redis.call('HDEL', k('hold'), rid)
  if redis.call('LLEN', pending(p)) == 0 then redis.call('ZREM', k('ring'), p) end
  redis.call('ZREM', QUEUE, rid)
  redis.call('DEL', ARGV[5])
  return 'pending'
end
if redis.call('ZSCORE', k('inflight'), rid) and redis.call('ZSCORE', QUEUE, rid)
    and redis.call('EXISTS', ARGV[6]) == 0 then
  redis.call('ZREM', QUEUE, rid)
  redis.call('DEL', ARGV[5])
  release(rid)
  dispatch()
  return 'dispatched'
end
return ''
