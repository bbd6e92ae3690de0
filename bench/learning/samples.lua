-- wrk script: POST /v1/samples with one fixed body ($BODY_FILE), JSON or
-- binary ($CONTENT_TYPE; $HEADER_LENGTH for the binary extension).
local req

function init(args)
  local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
  local body = f:read("*a")
  f:close()
  local headers = { ["Content-Type"] = os.getenv("CONTENT_TYPE") }
  local hl = os.getenv("HEADER_LENGTH")
  if hl ~= nil and hl ~= "" then headers["Inference-Header-Content-Length"] = hl end
  req = wrk.format("POST", "/v1/samples", headers, body)
end

function request()
  return req
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
