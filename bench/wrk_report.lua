-- wrk script for bench/http_disclosure.py: one request shape per run, taken from the environment, and a
-- machine-readable summary at the end.
--
--   BENCH_METHOD   GET (default) or POST
--   BENCH_BODY     request body (sent as application/json)
--   BENCH_TOKEN    access token (optional), sent as "Authorization: <BENCH_SCHEME> <token>"
--   BENCH_SCHEME   the token's scheme: DPoP (default) or Bearer
--   BENCH_PROOFS   a file of DPoP proofs (RFC 9449), one per line (optional). wrk's Lua cannot sign, so
--                  bench/http_disclosure.py signs enough single-use proofs just before the run; with
--                  BENCH_THREADS threads, thread i sends lines i, i + n, i + 2n, … each once, in its own order.
--                  A thread that runs out starts over: those requests are replays, which the broker refuses (401,
--                  counted as non-2xx), and `proofs_exhausted` in the summary says how many there were.
--
-- `done` prints one line "BENCH-JSON {...}" with the request count, the duration, the error counts (`status` is
-- wrk's count of responses with a status above 399), the proofs sent twice, and latency percentiles in
-- microseconds.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = (os.getenv("BENCH_SCHEME") or "DPoP") .. " " .. token
end

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local proofs = {}
local headers = {}
local sent = 0
exhausted = 0

function init(args)
  local path = os.getenv("BENCH_PROOFS")
  if path and path ~= "" then
    for name, value in pairs(wrk.headers) do
      headers[name] = value
    end
    local n = tonumber(os.getenv("BENCH_THREADS") or "1")
    local line_no = 0
    for line in io.lines(path) do
      if line_no % n == id then
        proofs[#proofs + 1] = line
      end
      line_no = line_no + 1
    end
  end
end

-- Only with proofs: without a `request` function wrk builds the request once and sends the same bytes every time,
-- as it did for /healthz and the bare insert app before DPoP.
if (os.getenv("BENCH_PROOFS") or "") ~= "" then
  function request()
    sent = sent + 1
    if sent > #proofs then
      exhausted = exhausted + 1
    end
    headers["DPoP"] = proofs[(sent - 1) % #proofs + 1]
    return wrk.format(nil, nil, headers, nil)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local replays = 0
  for _, thread in ipairs(threads) do
    replays = replays + (thread:get("exhausted") or 0)
  end
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"proofs_exhausted":%d,' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, replays,
    latency.min, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
