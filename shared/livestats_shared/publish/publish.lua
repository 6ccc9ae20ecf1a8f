-- The gate: check a chunk of one run's events against the contract, then append all of it
-- atomically, keeping the stats hash in step. Nothing is written unless every event passes
-- (a script is not rolled back: a write that failed half-way would stay half-applied).
--
-- KEYS[1] run event stream, KEYS[2] run stats hash, KEYS[3] run lifecycle hash (one hash tag)
-- ARGV[1] producer id ('' disables de-duplication)
-- ARGV[2] stream MAXLEN (approximate)
-- ARGV[3] retention TTL in seconds, applied when the chunk holds a terminal event
-- ARGV[4] run id              ARGV[5] schema version, written as each entry's `v`
-- ARGV[6] first producer seq  ARGV[7] last producer seq of the chunk
-- ARGV[8] guard: '' = none, else space-separated statuses the run must be in ('~' = no run yet)
-- ARGV[9] 1 if the chunk holds a terminal event
-- ARGV[10] the chunk's merged stats delta as JSON {"incr": [f, n, ...], "set": [f, v, ...],
--          "del": [f, ...]}: the net effect of its events, so the hash is written once
-- ARGV[11] the entries: type, ts, data, check of each, every field followed by a NUL but the
--          last (one argument, not four per event: packing arguments is the client's main cost).
--          `check` is what the state machine needs of the event, tab-separated (gate.py).
-- ARGV[12] fence: '' = unfenced (ingest, replay), else the owner epoch the run must still have
-- ARGV[13] previous producer seq: '' or the last seq of this producer's previous chunk of the
--          run in the same pipeline; unless that chunk landed, this one is deferred
--
-- Returns {1, first seq, last entry id, epoch} when applied; {0, seq, ''} when this producer
-- already wrote the chunk (resent after a connection error); {-1, 0, status} when the guard
-- refused; {-2, index, code, message} when event `index` (0-based; -1: some event, unknown
-- which) breaks the contract, code finished | fenced | state | range; {-3, 0, ''} deferred.
local stream, stats, life = KEYS[1], KEYS[2], KEYS[3]
local producer, maxlen, ttl, run_id, v = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local first_pseq, last_pseq, guard = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local fence, prev_pseq = ARGV[12], ARGV[13]
local pfield = 'producer:' .. producer
local MAX = 9007199254740991 -- 2^53-1: exact in a Lua number, in a browser and in Redis
local find, sub, match, fmt = string.find, string.sub, string.match, string.format

if producer ~= '' then
  local mark = redis.call('HGET', stats, pfield) or '0'
  local written = tonumber(mark)
  if last_pseq <= written then
    -- Rewritten unchanged on purpose: a replicated write, so a WAIT after this call on any
    -- connection also covers the first write of the chunk (replicas.py).
    redis.call('HSET', stats, pfield, mark)
    return {0, tonumber(redis.call('HGET', stats, 'seq') or '0'), ''}
  end
  if first_pseq <= written then
    return redis.error_reply('livestats: chunk ' .. first_pseq .. '-' .. last_pseq ..
      ' overlaps what producer ' .. producer .. ' already wrote (up to ' .. written .. ')')
  end
  if prev_pseq ~= '' and written < tonumber(prev_pseq) then
    return {-3, 0, ''} -- the chunk before it was refused: keep the producer's order
  end
end

local status = redis.call('HGET', stats, 'status') or '~'
if guard ~= '' then
  local allowed = false
  for g in string.gmatch(guard, '%S+') do
    if g == status then allowed = true end
  end
  if not allowed then return {-1, 0, status} end
end

local TERMINAL = {succeeded = true, failed = true, timed_out = true, cancelled = true, stalled = true}
local life_v, epoch, open_calls, open_phases = unpack(redis.call('HMGET', life, 'v', 'epoch', 'open_calls', 'open_phases'))
if fence ~= '' and fence ~= epoch and not TERMINAL[status] then
  return {-2, 0, 'fenced', 'run ' .. run_id .. ' has a new owner (epoch ' .. tostring(epoch or 'none') ..
    ', this producer holds ' .. fence .. '): its writes are refused'}
end
-- A run written before the lifecycle hash existed is checked for status only.
local legacy = status ~= '~' and not life_v

-- Pass 1: split the entries; collect the lifecycle fields the checks need (each field once).
local items, need, seen, pfields = {}, {}, {}, {}
local function want(f)
  if not seen[f] then seen[f] = true; need[#need + 1] = f end
end
local function phase_fields(p) -- 'phase:<p>', 'open:<p>', built once per phase
  local pf = pfields[p]
  if not pf then
    pf = {'phase:' .. p, 'open:' .. p}
    pfields[p] = pf
    want(pf[1]); want(pf[2])
  end
  return pf
end
local entries, pos = ARGV[11], 1
while pos <= #entries do
  local a = find(entries, '\0', pos, true)
  local b = find(entries, '\0', a + 1, true)
  local c = find(entries, '\0', b + 1, true)
  local d = find(entries, '\0', c + 1, true) or (#entries + 1)
  local it = {t = sub(entries, pos, a - 1), ts = sub(entries, a + 1, b - 1), data = sub(entries, b + 1, c - 1),
    k = sub(entries, c + 1, d - 1)}
  pos = d + 1
  local t = it.t
  if t == 'call.started' or t == 'call.succeeded' or t == 'call.failed' or t == 'call.retrying' then
    it.p, it.c, it.a, it.f, it.s = match(it.k, '^([^\t]*)\t(%d+)\t(%d+)\t?(%d?)(%d?)$')
    it.a = tonumber(it.a)
    local pf = phase_fields(it.p)
    it.cf, it.pf, it.of = 'call:' .. it.p .. ':' .. it.c, pf[1], pf[2]
    want(it.cf)
  elseif t == 'phase.started' or t == 'phase.finished' then
    it.p, it.x = match(it.k, '^([^\t]*)\t?(.*)$')
    local pf = phase_fields(it.p)
    it.pf, it.of = pf[1], pf[2]
  end
  items[#items + 1] = it
end

-- Pass 2: run the state machine over the chunk in memory; refuse at the first bad event.
local st = {}
if #need > 0 and not legacy then
  local got = redis.call('HMGET', life, unpack(need))
  for i = 1, #need do st[need[i]] = got[i] or false end
end
st['open_calls'], st['open_phases'] = tonumber(open_calls or '0'), tonumber(open_phases or '0')
local changed, new_epoch = {}, nil
local function put(f, val) st[f] = val; changed[f] = true end
local function bump(f, n) put(f, tonumber(st[f] or '0') + n) end

local function check(it)
  local t = it.t
  if TERMINAL[status] or status == 'ended' then
    return 'finished', 'run ' .. run_id .. ' has finished' .. (TERMINAL[status] and ' (' .. status .. ')' or '') ..
      ': nothing is written after run.finished'
  end
  if t == 'run.queued' then
    if status ~= '~' then return 'state', 'run ' .. run_id .. ' exists already (' .. status .. ')' end
    status = 'queued'
    put('v', '1')
    local i = 0
    for name in string.gmatch(it.k, '[^\t]+') do put('phase:' .. name, 'q' .. i); i = i + 1 end
    return nil
  end
  if t == 'run.started' then
    if status ~= 'queued' then
      return 'state', 'run.started needs a queued run; run ' .. run_id .. ' is ' .. status
    end
    status = 'running'
    new_epoch = tonumber(epoch or '0') + 1
    put('epoch', fmt('%d', new_epoch))
    return nil
  end
  if t == 'run.finished' then
    if status ~= 'queued' and status ~= 'running' then
      return 'state', 'run.finished needs a queued or running run; run ' .. run_id .. ' is ' .. status
    end
    if not legacy and st['open_calls'] > 0 then
      return 'state', st['open_calls'] .. ' call attempt(s) still in flight: end each with call.failed first'
    end
    if not legacy and st['open_phases'] > 0 then
      return 'state', st['open_phases'] .. ' phase(s) still running: end each with phase.finished first'
    end
    status = 'ended'
    return nil
  end
  -- A queued run that ends (cancelled, enqueue failed) may close its planned phases.
  if status ~= 'running' and not (status == 'queued' and t == 'phase.finished') then
    return 'state', t .. ' needs a running run (after run.started); run ' .. run_id .. ' is ' ..
      (status == '~' and 'unknown' or status)
  end
  if legacy or t == 'heartbeat' then return nil end
  local ph = st[it.pf]
  if t == 'phase.started' then
    if ph and sub(ph, 1, 1) ~= 'q' then return 'state', 'phase ' .. it.p .. ' has started already' end
    put(it.pf, 'r' .. it.x .. ':' .. it.ts)
    bump('open_phases', 1)
    return nil
  end
  if not ph then
    return 'state', 'phase ' .. it.p .. ' is not declared: name it in the plan or send phase.started first'
  end
  if ph == 'f' then return 'state', 'phase ' .. it.p .. ' has ended' end
  if t == 'phase.finished' then
    local open = tonumber(st[it.of] or '0')
    if open > 0 then return 'state', 'phase ' .. it.p .. ' has ' .. open .. ' call attempt(s) in flight' end
    if sub(ph, 1, 1) == 'q' and it.x == 'finished' then
      return 'state', 'phase ' .. it.p .. ' never started: it can only end as its run does, not `finished`'
    end
    if sub(ph, 1, 1) == 'r' then bump('open_phases', -1) end
    put(it.pf, 'f')
    return nil
  end
  local call, a = st[it.cf], it.a
  local cs, last = '', 0
  if call then cs, last = sub(call, 1, 1), tonumber(match(call, '^%a(%d+)')) end
  local name = 'call ' .. it.p .. '#' .. it.c
  if cs == 'd' then return 'state', name .. ' has ended (attempt ' .. last .. ')' end
  if t == 'call.started' then
    if cs == 'o' then return 'state', name .. ' has attempt ' .. last .. ' in flight' end
    if (cs == 'r' and a < last) or (cs ~= 'r' and a <= last) then
      return 'state', name .. ': attempt ' .. a .. ' after attempt ' .. last .. '; attempts must increase'
    end
    put(it.cf, 'o' .. a .. ':' .. it.ts)
    bump(it.of, 1); bump('open_calls', 1)
    return nil
  end
  if t == 'call.retrying' then
    if cs ~= 'c' or a <= last then
      return 'state', name .. ': call.retrying(attempt ' .. a .. ') needs a failed attempt before it, and a higher number'
    end
    put(it.cf, 'r' .. a)
    return nil
  end
  local final = t == 'call.succeeded' or it.f == '1'
  if cs == 'o' and it.s ~= '0' then
    if a ~= last then return 'state', name .. ' has attempt ' .. last .. ' in flight, not ' .. a end
    put(it.cf, (final and 'd' or 'c') .. a)
    bump(it.of, -1); bump('open_calls', -1)
    return nil
  end
  -- No attempt in flight: only giving up a call that waits for its next attempt is allowed
  -- (call.failed final, started=false, the attempt it waited for).
  if t == 'call.failed' and final and it.s == '0' and (cs == 'r' and a >= last or cs == 'c' and a > last) then
    put(it.cf, 'd' .. a)
    return nil
  end
  return 'state', t .. ': ' .. name .. ' has no attempt ' .. a .. ' in flight (send call.started first)'
end

for i, it in ipairs(items) do
  local code, message = check(it)
  if code then return {-2, i - 1, code, message} end
end

-- Counters accumulate: refuse a chunk that would take one past 2^53-1 or below 0.
local delta = cjson.decode(ARGV[10])
local incr, set, del = delta['incr'], delta['set'], delta['del']
if #incr > 0 then
  local names = {}
  for j = 1, #incr, 2 do names[#names + 1] = incr[j] end
  local now = redis.call('HMGET', stats, unpack(names))
  for j = 1, #names do
    local after = tonumber(now[j] or '0') + tonumber(incr[2 * j])
    if after > MAX or after < 0 then
      return {-2, -1, 'range', names[j] .. ' would become ' .. fmt('%.17g', after) .. ', outside [0, 2^53-1]'}
    end
  end
end

-- Every check passed: write.
for j = 1, #incr, 2 do redis.call('HINCRBY', stats, incr[j], incr[j + 1]) end
if #set > 0 then redis.call('HSET', stats, unpack(set)) end
if #del > 0 then redis.call('HDEL', stats, unpack(del)) end
local lw = {}
for f in pairs(changed) do lw[#lw + 1] = f; lw[#lw + 1] = tostring(st[f]) end
if #lw > 0 and not legacy then redis.call('HSET', life, unpack(lw)) end

local seq = tonumber(redis.call('HGET', stats, 'seq') or '0')
local first_seq = seq + 1
local id, last = '', items[#items]
for _, it in ipairs(items) do
  seq = seq + 1
  id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'v', v, 'type', it.t, 'run_id', run_id, 'seq', fmt('%d', seq), 'ts', it.ts, 'data', it.data)
end

redis.call('HSET', stats, 'seq', fmt('%d', seq), 'last_id', id, 'last_ts', last.ts, 'last_type', last.t)
if producer ~= '' then redis.call('HSET', stats, pfield, ARGV[7]) end
if ARGV[9] == '1' and ttl > 0 then
  redis.call('EXPIRE', stream, ttl)
  redis.call('EXPIRE', stats, ttl)
  redis.call('EXPIRE', life, ttl)
end
return {1, first_seq, id, new_epoch and fmt('%d', new_epoch) or (epoch or '')}
