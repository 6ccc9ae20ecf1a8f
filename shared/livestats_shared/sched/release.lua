-- A worker finished a run (or gave up on it): free its slot, then dispatch.
-- ARGV[4] run id. Returns {1 if a slot was freed, runs dispatched}.
local freed = release(ARGV[4])
return {freed, dispatch()}
