-- wrk script for bench/http_disclosure.py: one request shape per run, taken from the environment, and a
-- machine-readable summary at the end.
--
--   BENCH_METHOD  GET (default) or POST
--   BENCH_BODY    request body (sent as application/json)
--   BENCH_TOKEN   bearer access token (optional)
--
-- `done` prints one line "BENCH-JSON {...}" with the request count, the duration, the error counts (`status` is
-- wrk's count of responses with a status above 399) and latency percentiles in microseconds.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
