-- wrk script for the benchmark apps: each connection's thread alternates
-- GET /items/<n> (n cycling over 0..999) and GET /page, so both routes (a JSON
-- response with a path parameter, a small HTML page) are measured equally. Every request
-- carries the headers a browser sends (user agent, accept, language, encoding, referer,
-- client hints), from 2,000 distinct visitors (the user agent's build number differs; half
-- of them carry a JavaScript tracker's _pk_id cookie and a session cookie), so that no
-- per-visitor cache always hits as it would with one fixed request.
-- done() prints one line "BENCH_JSON {...}" that bench/run.py parses: exact request
-- counts, errors and latency percentiles (microseconds) from wrk's HdrHistogram.

local paths = {}
local i = 0

local function browser(visitor)
  local headers = {
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      .. "Chrome/120.0." .. visitor .. ".0 Safari/537.36",
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Language"] = "en-US,en;q=0.9,de;q=0.8",
    ["Accept-Encoding"] = "gzip, deflate, br",
    ["Referer"] = "http://127.0.0.1/page?from=" .. visitor,
    ["sec-ch-ua"] = '"Chromium";v="120", "Not?A_Brand";v="8"',
    ["sec-ch-ua-mobile"] = "?0",
    ["sec-ch-ua-platform"] = '"Linux"',
  }
  if visitor % 2 == 0 then
    headers["Cookie"] = string.format(
      "_pk_id.1.1fff=%016x.1700000000.; sessionid=s%dq8z", visitor * 7919, visitor)
  end
  return headers
end

init = function(args)
  for n = 0, 999 do
    paths[#paths + 1] = wrk.format("GET", "/items/" .. n, browser(2 * n))
    paths[#paths + 1] = wrk.format("GET", "/page", browser(2 * n + 1))
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
