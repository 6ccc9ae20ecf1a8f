-- Append a chunk of events to one run atomically, keeping the stats hash in step.
--
-- KEYS[1] run event stream, KEYS[2] run stats hash (same hash tag, same slot)
-- ARGV[1] producer id ('' disables de-duplication)
-- ARGV[2] stream MAXLEN (approximate)
-- ARGV[3] retention TTL in seconds, applied when the chunk holds a terminal event
-- ARGV[4] run id              ARGV[5] schema version, written as each entry's `v`
-- ARGV[6] first producer seq  ARGV[7] last producer seq of the chunk
-- ARGV[8] guard: '' = none, else space-separated statuses the run must be in ('~' = no run yet)
-- ARGV[9] 1 if the chunk holds a terminal event
-- ARGV[10] the chunk's merged stats delta as JSON {"incr": [f, n, ...], "set": [f, v, ...],
--          "del": [f, ...]}: the net effect of its events, so the hash is written once
-- ARGV[11] the entries: type, ts, data of each, every field followed by a NUL but the last
--          (one argument, not three per event: packing arguments is the client's main cost)
--
-- Returns {1, first seq, last entry id} when applied, {0, seq, ''} when this producer already
-- wrote the chunk (resent after a connection error), {-1, 0, status} when the guard refused.
local stream, stats = KEYS[1], KEYS[2]
local producer, maxlen, ttl, run_id, v = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local first_pseq, last_pseq, guard = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local pfield = 'producer:' .. producer

if producer ~= '' then
  local written = tonumber(redis.call('HGET', stats, pfield) or '0')
  if last_pseq <= written then
    return {0, tonumber(redis.call('HGET', stats, 'seq') or '0'), ''}
  end
  if first_pseq <= written then
    return redis.error_reply('livestats: chunk ' .. first_pseq .. '-' .. last_pseq ..
      ' overlaps what producer ' .. producer .. ' already wrote (up to ' .. written .. ')')
  end
end

if guard ~= '' then
  local status = redis.call('HGET', stats, 'status') or '~'
  local allowed = false
  for g in string.gmatch(guard, '%S+') do
    if g == status then allowed = true end
  end
  if not allowed then return {-1, 0, status} end
end

local delta = cjson.decode(ARGV[10])
local incr, set, del = delta['incr'], delta['set'], delta['del']
for j = 1, #incr, 2 do redis.call('HINCRBY', stats, incr[j], incr[j + 1]) end
if #set > 0 then redis.call('HSET', stats, unpack(set)) end
if #del > 0 then redis.call('HDEL', stats, unpack(del)) end

local seq = tonumber(redis.call('HGET', stats, 'seq') or '0')
local first_seq = seq + 1
local id, etype, ts, data = '', '', '', ''
local entries, pos, find, sub = ARGV[11], 1, string.find, string.sub
while pos <= #entries do
  local a = find(entries, '\0', pos, true)
  local b = find(entries, '\0', a + 1, true)
  local c = find(entries, '\0', b + 1, true) or (#entries + 1)
  etype, ts, data = sub(entries, pos, a - 1), sub(entries, a + 1, b - 1), sub(entries, b + 1, c - 1)
  pos = c + 1
  seq = seq + 1
  id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'v', v, 'type', etype, 'run_id', run_id, 'seq', string.format('%d', seq), 'ts', ts, 'data', data)
end

redis.call('HSET', stats, 'seq', string.format('%d', seq), 'last_id', id, 'last_ts', ts, 'last_type', etype)
if producer ~= '' then redis.call('HSET', stats, pfield, ARGV[7]) end
if ARGV[9] == '1' and ttl > 0 then
  redis.call('EXPIRE', stream, ttl)
  redis.call('EXPIRE', stats, ttl)
end
return {1, first_seq, id}
