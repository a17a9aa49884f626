-- wrk script for the benchmark apps: each connection's thread alternates
-- GET /items/<n> (n cycling over 0..999) and GET /page, so both routes (a JSON
-- response with a path parameter, a small HTML page) are measured equally.
-- done() prints one line "BENCH_JSON {...}" that bench/run.py parses: exact request
-- counts, errors and latency percentiles (microseconds) from wrk's HdrHistogram.

local paths = {}
local i = 0

init = function(args)
  for n = 0, 999 do
    paths[#paths + 1] = wrk.format("GET", "/items/" .. n)
    paths[#paths + 1] = wrk.format("GET", "/page")
  end
end

request = function()
  i = i + 1
  if i > #paths then
    i = 1
  end
  return paths[i]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%.0f,' ..
    '"p50":%.0f,"p90":%.0f,"p99":%.0f,"p999":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
