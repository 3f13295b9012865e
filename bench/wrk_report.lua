-- wrk script for the HTTP benchmarks (bench/http_disclosure.py, bench/scale.py, bench/scaling.py): one request
-- shape per run, taken from the environment, and a machine-readable summary at the end.
--
--   BENCH_METHOD   GET (default) or POST
--   BENCH_BODY     request body (sent as application/json)
--   BENCH_TOKEN    access token (optional), sent as "Authorization: <BENCH_SCHEME> <token>"
--   BENCH_SCHEME   the token's scheme: DPoP (default) or Bearer
--   BENCH_PROOFS   a file of DPoP proofs (RFC 9449), one per line (optional). wrk's Lua cannot sign, so the
--                  benchmark signs enough single-use proofs just before the run; with BENCH_THREADS threads,
--                  thread i sends lines i, i + n, i + 2n, … each once, in its own order. A thread that runs out
--                  starts over: those requests are replays, which the broker refuses (401, counted as non-2xx),
--                  and `proofs_exhausted` in the summary says how many there were.
--   BENCH_PERSONS  a file of person ids, one per line (optional). Each request's body is BENCH_BODY with the
--                  placeholder PERSON_ID replaced by one of them, picked at random per request, so that a run
--                  spreads over many persons instead of hitting one person's rows.
--   BENCH_ADDRS    "host:port,host:port,…" (optional): thread i connects to address i mod n, so one wrk process
--                  spreads its connections over several servers (bench/scaling.py's instances).
--
-- `done` prints one line "BENCH-JSON {...}" with the request count, the duration, the error counts (`status` is
-- wrk's count of responses with a status above 399), the proofs sent twice, the persons' count, and latency
-- percentiles in microseconds.

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

local function set(name)
  local value = os.getenv(name)
  return value ~= nil and value ~= ""
end

local threads = {}
local addrs = nil

function setup(thread)
  thread:set("id", #threads)
  if set("BENCH_ADDRS") then
    if addrs == nil then
      addrs = {}
      for spec in string.gmatch(os.getenv("BENCH_ADDRS"), "[^,]+") do
        local host, port = string.match(spec, "^(.+):(%d+)$")
        local found = wrk.lookup(host, port)
        if found == nil or #found == 0 then
          error("BENCH_ADDRS: cannot resolve " .. spec)
        end
        addrs[#addrs + 1] = found[1]
      end
    end
    thread.addr = addrs[(#threads % #addrs) + 1]
  end
  table.insert(threads, thread)
end

local proofs = {}
local persons = {}
local headers = {}
local body_head, body_tail = nil, nil
local sent = 0
exhausted = 0
person_count = 0

function init(args)
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  if set("BENCH_PROOFS") then
    local n = tonumber(os.getenv("BENCH_THREADS") or "1")
    local line_no = 0
    for line in io.lines(os.getenv("BENCH_PROOFS")) do
      if line_no % n == id then
        proofs[#proofs + 1] = line
      end
      line_no = line_no + 1
    end
  end
  if set("BENCH_PERSONS") then
    for line in io.lines(os.getenv("BENCH_PERSONS")) do
      if line ~= "" then
        persons[#persons + 1] = line
      end
    end
    local at = string.find(wrk.body or "", "PERSON_ID", 1, true)
    if #persons == 0 or at == nil then
      error("BENCH_PERSONS needs persons in its file and the placeholder PERSON_ID in BENCH_BODY")
    end
    body_head, body_tail = string.sub(wrk.body, 1, at - 1), string.sub(wrk.body, at + #"PERSON_ID")
    person_count = #persons
    -- A different sequence in each thread (each has its own Lua state) and in each run.
    math.randomseed(os.time() * 1000 + id * 7919)
  end
end

-- Only with proofs or persons: without a `request` function wrk builds the request once and sends the same bytes
-- every time, as it does for /healthz and the bare insert app.
if set("BENCH_PROOFS") or set("BENCH_PERSONS") then
  function request()
    sent = sent + 1
    if #proofs > 0 then
      if sent > #proofs then
        exhausted = exhausted + 1
      end
      headers["DPoP"] = proofs[(sent - 1) % #proofs + 1]
    end
    local request_body = nil
    if body_head ~= nil then
      request_body = body_head .. persons[math.random(#persons)] .. body_tail
    end
    return wrk.format(nil, nil, headers, request_body)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local replays = 0
  local spread = 0
  for _, thread in ipairs(threads) do
    replays = replays + (thread:get("exhausted") or 0)
    spread = math.max(spread, thread:get("person_count") or 0)
  end
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"proofs_exhausted":%d,' ..
    '"persons":%d,"threads":%d,' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, replays, spread, #threads,
    latency.min, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
