-- Append a batch of events to one run atomically, keeping the stats hash in step.
--
-- KEYS[1] run event stream, KEYS[2] run stats hash (same hash tag, same slot)
-- ARGV[1] producer id ('' disables de-duplication)
-- ARGV[2] stream MAXLEN (approximate)
-- ARGV[3] retention TTL in seconds, applied when a terminal event is written
-- ARGV[4] number of events, then per event:
--   pseq, guard, finished(0|1), n_incr, n_set, n_del, incr pairs..., set pairs..., del fields...,
--   v, type, run_id, ts, data
-- guard: '' = none; otherwise space-separated statuses the run must be in ('~' = no run yet).
--
-- Returns one triple per event:
--   {1, seq, id}       applied
--   {0, seq, ''}       duplicate (this producer already wrote this pseq: a retried batch)
--   {-1, 0, status}    refused by the guard; nothing written
local stream, stats = KEYS[1], KEYS[2]
local producer, maxlen, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pfield = 'producer:' .. producer
local out = {}
local i = 5

for _ = 1, tonumber(ARGV[4]) do
  local pseq, guard, finished = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  local n_incr, n_set, n_del = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  i = i + 6
  local body = i
  i = i + 2 * n_incr + 2 * n_set + n_del + 5

  local verdict = nil
  if producer ~= '' and pseq <= tonumber(redis.call('HGET', stats, pfield) or '0') then
    verdict = {0, tonumber(redis.call('HGET', stats, 'seq') or '0'), ''}
  elseif guard ~= '' then
    local status = redis.call('HGET', stats, 'status') or '~'
    local allowed = false
    for g in string.gmatch(guard, '%S+') do
      if g == status then allowed = true end
    end
    if not allowed then verdict = {-1, 0, status} end
  end

  if verdict == nil then
    local j = body
    for _ = 1, n_incr do
      redis.call('HINCRBY', stats, ARGV[j], ARGV[j + 1]); j = j + 2
    end
    for _ = 1, n_set do
      redis.call('HSET', stats, ARGV[j], ARGV[j + 1]); j = j + 2
    end
    for _ = 1, n_del do
      redis.call('HDEL', stats, ARGV[j]); j = j + 1
    end
    local seq = redis.call('HINCRBY', stats, 'seq', 1)
    local v, etype, run_id, ts, data = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
    local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'v', v, 'type', etype, 'run_id', run_id, 'seq', seq, 'ts', ts, 'data', data)
    redis.call('HSET', stats, 'last_id', id, 'last_ts', ts, 'last_type', etype)
    if producer ~= '' then redis.call('HSET', stats, pfield, pseq) end
    if finished == '1' and ttl > 0 then
      redis.call('EXPIRE', stream, ttl)
      redis.call('EXPIRE', stats, ttl)
    end
    verdict = {1, seq, id}
  end
  out[#out + 1] = verdict
end
return out
