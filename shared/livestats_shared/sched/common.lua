-- Fair-share scheduler: what every scheduler script shares (docs/scheduling.md).
--
-- ARGV[1] the queue's scheduler key prefix (keys.sched_prefix)
-- ARGV[2] arq's queue (sorted set of job ids scored by when they are due, epoch ms)
-- ARGV[3] now, epoch ms (the caller's clock: scripts must not read TIME before writing on old servers)
-- ARGV[4...] the script's own arguments (see each script)
--
-- A run waits in its principal's `pending` list while its arq job is parked in arq's queue with
-- a score far in the future. Dispatching a run makes its job due (score = now) and holds one
-- slot for it in `inflight` until its worker releases it (or the hold deadline passes).
local P, QUEUE, NOW = ARGV[1], ARGV[2], tonumber(ARGV[3])

local function k(name) return P .. ':' .. name end
local function pending(p) return k('pending:' .. p) end

-- Free a run's slot; 1 if it held one.
local function release(rid)
  if redis.call('ZREM', k('inflight'), rid) == 0 then return 0 end
  local who = redis.call('HGET', k('owner'), rid)
  redis.call('HDEL', k('owner'), rid)
  if who and redis.call('HINCRBY', k('running'), who, -1) <= 0 then
    redis.call('HDEL', k('running'), who)
  end
  return 1
end

-- Slots advertised by live workers (expired advertisements are dropped).
local function capacity()
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', k('workers'), '-inf', NOW)) do
    redis.call('ZREM', k('workers'), w)
    redis.call('HDEL', k('slots'), w)
  end
  local total = 0
  for _, s in ipairs(redis.call('HVALS', k('slots'))) do total = total + tonumber(s) end
  return total
end

-- The first principal in round-robin order (least recently served) below its concurrent limit.
local function next_principal()
  for _, p in ipairs(redis.call('ZRANGE', k('ring'), 0, -1)) do
    local limit = tonumber(redis.call('HGET', k('limits'), p) or '0')
    local running = tonumber(redis.call('HGET', k('running'), p) or '0')
    if limit == 0 or running < limit then return p end
  end
  return nil
end

local function note_dispatch(p)
  local last = redis.call('HGET', k('last'), p)
  if last then
    local gap = NOW - tonumber(last)
    local smoothed = tonumber(redis.call('HGET', k('gap'), p) or gap)
    redis.call('HSET', k('gap'), p, math.floor(0.7 * smoothed + 0.3 * gap))
  end
  redis.call('HSET', k('last'), p, NOW)
end

-- Make one pending run of `p` due in arq's queue; false if its job has left the queue.
local function start(p, rid)
  local hold = tonumber(redis.call('HGET', k('hold'), rid) or '0')
  redis.call('HDEL', k('hold'), rid)
  if not redis.call('ZSCORE', QUEUE, rid) then
    redis.call('HDEL', k('owner'), rid)  -- cancelled or expired while parked: nothing to run
    return false
  end
  redis.call('ZADD', QUEUE, 'XX', NOW, rid)
  redis.call('ZADD', k('inflight'), NOW + hold, rid)
  redis.call('HINCRBY', k('running'), p, 1)
  note_dispatch(p)
  return true
end

-- Move runs into arq's queue, one per principal in turn, while live workers have free slots.
-- Returns how many were dispatched.
local function dispatch()
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', k('inflight'), '-inf', NOW)) do release(rid) end
  local free = capacity() - redis.call('ZCARD', k('inflight'))
  local moved = 0
  while free > 0 do
    local p = next_principal()
    if not p then break end
    local rid = redis.call('LPOP', pending(p))
    local turn = redis.call('INCR', k('turn'))
    redis.call('HSET', k('served'), p, turn)
    if redis.call('LLEN', pending(p)) == 0 then
      redis.call('ZREM', k('ring'), p)
    else
      redis.call('ZADD', k('ring'), turn, p)
    end
    if rid and start(p, rid) then
      free = free - 1
      moved = moved + 1
    end
  end
  return moved
end
