-- wrk script: single-sample KServe v2 JSON infer requests, cycling through
-- the Fashion-MNIST bodies that serving_bench wrote to $BODY_DIR
-- (json_0.txt .. json_<BODY_COUNT-1>.txt).
local requests = {}
local index = 0

function init(args)
  local dir = os.getenv("BODY_DIR")
  local count = tonumber(os.getenv("BODY_COUNT") or "1")
  for i = 0, count - 1 do
    local f = assert(io.open(dir .. "/json_" .. i .. ".txt", "rb"))
    local body = f:read("*a")
    f:close()
    requests[#requests + 1] = wrk.format("POST", "/v2/models/fashion/infer",
      { ["Content-Type"] = "application/json" }, body)
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
