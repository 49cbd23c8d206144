-- wrk script for bench/run.sh: POSTs the JSON body in the file named by
-- $BENCH_BODY (with the extra headers of $BENCH_HEADERS, "Name: value" lines,
-- if set) and, when done, prints one line "BENCH_JSON {...}" with the
-- figures run.sh records (latencies in ms, same fields as loadgen's).
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-client"
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^%s*([^:]-)%s*:%s*(.-)%s*$")
  assert(name and name ~= "", "BENCH_HEADERS: want 'Name: value' lines, got " .. line)
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local secs = summary.duration / 1e6
  local ok = summary.requests - e.status
  io.write(string.format(
    'BENCH_JSON {"tool":"wrk","requests":%d,"errors":%d,' ..
    '"error_kinds":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"duration_s":%.3f,"rps":%.1f,"p50_ms":%.4f,"p90_ms":%.4f,"p99_ms":%.4f,"max_ms":%.4f}\n',
    summary.requests, errors, e.connect, e.read, e.write, e.status, e.timeout,
    secs, ok / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
