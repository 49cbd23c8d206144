-- wrk script for bench/run.sh: post.lua (same body file, headers and
-- BENCH_JSON line), except that every request's body is different, so that
-- none can be answered from a response cache. A tag "[<seed>-<thread>-<n>] "
-- goes at the start of the user message: <seed> is $BENCH_SEED (run.sh gives
-- every wrk run its own, so a measured run does not repeat its warm-up's
-- bodies), <n> counts the thread's requests. The message stays short (the
-- same route and rules apply as for the body as written).
local dir = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
dofile(dir .. "post.lua")

local marker = '"role":"user","content":"'
local at = wrk.body:find(marker, 1, true)
assert(at, "unique.lua: the body has no user message (" .. marker .. ")")
local prefix = wrk.body:sub(1, at + #marker - 1)
local suffix = wrk.body:sub(at + #marker)
local seed = os.getenv("BENCH_SEED") or tostring(os.time())

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local n = 0
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, prefix .. "[" .. seed .. "-" .. (tid or 0) .. "-" .. n .. "] " .. suffix)
end
