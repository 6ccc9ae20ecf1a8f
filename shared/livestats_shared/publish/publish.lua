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
-- ARGV[11] the entries as one JSON array of strings, seven per event: type, ts, data, then what
--          the state machine needs of it (gate.check_of): p, c, a, fs. One argument, not seven
--          per event: packing arguments is the client's main cost; decoding it is cjson's, in C.
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

-- Pass 1: the entries, seven strings per event from row j on: rows[j] type, j+1 ts, j+2 data,
-- j+3 p, j+4 c, j+5 a, j+6 fs (gate.check_of says what p, c, a and fs hold for each type). Kept
-- as cjson made them, no table per event: this runs for every event published. Collect the
-- lifecycle fields the checks need, each field once.
local rows = cjson.decode(ARGV[11])
local nrows = #rows
local CALL = {['call.started'] = true, ['call.succeeded'] = true, ['call.failed'] = true, ['call.retrying'] = true}
local need, seen, pfields, cfs = {}, {}, {}, {}
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
for j = 1, nrows, 7 do
  local t = rows[j]
  if CALL[t] then
    local cf = 'call:' .. rows[j + 3] .. ':' .. rows[j + 4]
    cfs[j] = cf
    want(cf)
    phase_fields(rows[j + 3])
  elseif t == 'phase.started' or t == 'phase.finished' then
    phase_fields(rows[j + 3])
  end
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
local NO_PHASE = {'', ''} -- an event type without a phase that got this far: 'not declared'
local function call_name(j) return 'call ' .. rows[j + 3] .. '#' .. rows[j + 4] end

local function check(j)
  local t = rows[j]
  if TERMINAL[status] or status == 'ended' then
    return 'finished', 'run ' .. run_id .. ' has finished' .. (TERMINAL[status] and ' (' .. status .. ')' or '') ..
      ': nothing is written after run.finished'
  end
  if t == 'run.queued' then
    if status ~= '~' then return 'state', 'run ' .. run_id .. ' exists already (' .. status .. ')' end
    status = 'queued'
    put('v', '1')
    local i = 0
    for name in string.gmatch(rows[j + 3], '[^\t]+') do put('phase:' .. name, 'q' .. i); i = i + 1 end
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
  local p = rows[j + 3]
  local pf = pfields[p] or NO_PHASE
  local ph = st[pf[1]]
  if t == 'phase.started' then
    if ph and sub(ph, 1, 1) ~= 'q' then return 'state', 'phase ' .. p .. ' has started already' end
    put(pf[1], 'r' .. rows[j + 4] .. ':' .. rows[j + 1])
    bump('open_phases', 1)
    return nil
  end
  if not ph then
    return 'state', 'phase ' .. p .. ' is not declared: name it in the plan or send phase.started first'
  end
  if ph == 'f' then return 'state', 'phase ' .. p .. ' has ended' end
  if t == 'phase.finished' then
    local open = tonumber(st[pf[2]] or '0')
    if open > 0 then return 'state', 'phase ' .. p .. ' has ' .. open .. ' call attempt(s) in flight' end
    if sub(ph, 1, 1) == 'q' and rows[j + 4] == 'finished' then
      return 'state', 'phase ' .. p .. ' never started: it can only end as its run does, not `finished`'
    end
    if sub(ph, 1, 1) == 'r' then bump('open_phases', -1) end
    put(pf[1], 'f')
    return nil
  end
  -- a call event: the attempt as written (for the state) and as a number (to compare)
  local cf, a_text = cfs[j], rows[j + 5]
  local call, a = st[cf], tonumber(a_text)
  local cs, last = '', 0
  if call then cs, last = sub(call, 1, 1), tonumber(match(call, '^%a(%d+)')) end
  if cs == 'd' then return 'state', call_name(j) .. ' has ended (attempt ' .. last .. ')' end
  if t == 'call.started' then
    if cs == 'o' then return 'state', call_name(j) .. ' has attempt ' .. last .. ' in flight' end
    if (cs == 'r' and a < last) or (cs ~= 'r' and a <= last) then
      return 'state', call_name(j) .. ': attempt ' .. a .. ' after attempt ' .. last .. '; attempts must increase'
    end
    put(cf, 'o' .. a_text .. ':' .. rows[j + 1])
    bump(pf[2], 1); bump('open_calls', 1)
    return nil
  end
  if t == 'call.retrying' then
    if cs ~= 'c' or a <= last then
      return 'state', call_name(j) .. ': call.retrying(attempt ' .. a ..
        ') needs a failed attempt before it, and a higher number'
    end
    put(cf, 'r' .. a_text)
    return nil
  end
  local fs = rows[j + 6] -- call.failed: `final` and `started` as digits; '' otherwise
  local final, started = t == 'call.succeeded' or sub(fs, 1, 1) == '1', sub(fs, 2, 2)
  if cs == 'o' and started ~= '0' then
    if a ~= last then return 'state', call_name(j) .. ' has attempt ' .. last .. ' in flight, not ' .. a end
    put(cf, (final and 'd' or 'c') .. a_text)
    bump(pf[2], -1); bump('open_calls', -1)
    return nil
  end
  -- No attempt in flight: only giving up a call that waits for its next attempt is allowed
  -- (call.failed final, started=false, the attempt it waited for).
  if t == 'call.failed' and final and started == '0' and (cs == 'r' and a >= last or cs == 'c' and a > last) then
    put(cf, 'd' .. a_text)
    return nil
  end
  return 'state', t .. ': ' .. call_name(j) .. ' has no attempt ' .. a .. ' in flight (send call.started first)'
end

for j = 1, nrows, 7 do
  local code, message = check(j)
  if code then return {-2, (j - 1) / 7, code, message} end
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
local id = ''
for j = 1, nrows, 7 do
  seq = seq + 1
  id = redis.call('XADD', stream, '*',
    'v', v, 'type', rows[j], 'run_id', run_id, 'seq', fmt('%d', seq), 'ts', rows[j + 1], 'data', rows[j + 2])
end
-- Trimmed once per chunk, not per entry (three arguments fewer per XADD): inside the script
-- nobody sees the difference, and `~` trims whole nodes either way.
redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen)

redis.call('HSET', stats, 'seq', fmt('%d', seq), 'last_id', id, 'last_ts', rows[nrows - 5], 'last_type', rows[nrows - 6])
if producer ~= '' then redis.call('HSET', stats, pfield, ARGV[7]) end
if ARGV[9] == '1' and ttl > 0 then
  redis.call('EXPIRE', stream, ttl)
  redis.call('EXPIRE', stats, ttl)
  redis.call('EXPIRE', life, ttl)
end
return {1, first_seq, id, new_epoch and fmt('%d', new_epoch) or (epoch or '')}
