-- Appended to every workload script: numbers the threads (each thread has its own Lua state
-- and sees its number as the global `thread_id`) and prints one machine-readable line at the end.
local threads = 0

-- The headers of every request (wrk.format without headers of its own sends wrk.headers), from
-- the environment, never wrk's command line, which any account sees: one is the access cookie.
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+): (.*)$")
  wrk.headers[name] = value
end

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

-- Latencies are in microseconds; errors.status counts responses with a status >= 400.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
