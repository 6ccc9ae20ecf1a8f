-- Append a batch of events to one run atomically, keeping the stats hash in step.
--
-- KEYS[1] run event stream, KEYS[2] run stats hash (same hash tag, same slot)
-- ARGV[1] producer id ('' disables de-duplication)
-- ARGV[2] stream MAXLEN (approximate)
-- ARGV[3] retention TTL in seconds, applied when a terminal event is written
-- ARGV[4] run id
-- ARGV[5] schema version written as the entry's `v`
-- ARGV[6] the batch as JSON: [[pseq, [guard, finished, incr, set, del, type, ts, data]], ...]
--   incr and set are flat [field, value, ...] lists, del a list of fields; every value,
--   ts included, is a string (Lua numbers would print large integers in exponent form).
--   guard: '' = none; otherwise space-separated statuses the run must be in ('~' = no run yet).
--
-- Returns one triple per event:
--   {1, seq, id}       applied
--   {0, seq, ''}       duplicate (this producer already wrote this pseq: a resent batch)
--   {-1, 0, status}    refused by the guard; nothing written
local stream, stats = KEYS[1], KEYS[2]
local producer, maxlen, ttl, run_id, v = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local pfield = 'producer:' .. producer

-- The hash is read lazily and written once at the end: per event only the XADD touches the
-- keyspace. h[field] is the field's current value, or false when it is absent.
local h, dirty = {}, {}
local function get(f)
  local val = h[f]
  if val == nil then
    val = redis.call('HGET', stats, f) or false
    h[f] = val
  end
  return val
end
local function put(f, val)
  h[f] = val
  dirty[f] = true
end

local seq = tonumber(get('seq') or '0')
local last_pseq = producer ~= '' and tonumber(get(pfield) or '0') or nil
local expire = false
local out = {}

for _, item in ipairs(cjson.decode(ARGV[6])) do
  local pseq, ev = item[1], item[2]
  local guard, finished, incr, set, del = ev[1], ev[2], ev[3], ev[4], ev[5]
  local etype, ts, data = ev[6], ev[7], ev[8]

  local verdict = nil
  if last_pseq ~= nil and pseq <= last_pseq then
    verdict = {0, seq, ''}
  elseif guard ~= '' then
    local status = get('status') or '~'
    local allowed = false
    for g in string.gmatch(guard, '%S+') do
      if g == status then allowed = true end
    end
    if not allowed then verdict = {-1, 0, status} end
  end

  if verdict == nil then
    for j = 1, #incr, 2 do
      put(incr[j], string.format('%d', (tonumber(get(incr[j])) or 0) + tonumber(incr[j + 1])))
    end
    for j = 1, #set, 2 do put(set[j], set[j + 1]) end
    for j = 1, #del do put(del[j], false) end
    seq = seq + 1
    local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'v', v, 'type', etype, 'run_id', run_id, 'seq', string.format('%d', seq), 'ts', ts, 'data', data)
    put('seq', string.format('%d', seq))
    put('last_id', id)
    put('last_ts', ts)
    put('last_type', etype)
    if last_pseq ~= nil then
      last_pseq = pseq
      put(pfield, string.format('%d', pseq))
    end
    if finished == 1 then expire = true end
    verdict = {1, seq, id}
  end
  out[#out + 1] = verdict
end

local sets, dels = {}, {}
for f in pairs(dirty) do
  if h[f] then
    sets[#sets + 1] = f
    sets[#sets + 1] = h[f]
  else
    dels[#dels + 1] = f
  end
end
if #sets > 0 then redis.call('HSET', stats, unpack(sets)) end
if #dels > 0 then redis.call('HDEL', stats, unpack(dels)) end
if expire and ttl > 0 then
  redis.call('EXPIRE', stream, ttl)
  redis.call('EXPIRE', stats, ttl)
end
return out
