-- Rotates through the bench keys so every request does a real lookup.
local keys = {}
local i = 0
local path = os.getenv("BENCH_PATH") or "/"
-- BENCH_BODY bytes: POST a body of that size instead of a GET.
local size = tonumber(os.getenv("BENCH_BODY") or "0")
local body = size > 0 and string.rep("x", size) or nil
-- BENCH_CLOSE=1: one request per connection (new handshakes, for TLS).
local close = os.getenv("BENCH_CLOSE") == "1"
-- BENCH_CLIENT_IP: sent as X-Forwarded-For (the gates trust the load generator as a proxy).
local client = os.getenv("BENCH_CLIENT_IP")
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end

request = function()
  i = i % #keys + 1
  local headers = { ["x-api-key"] = keys[i] }
  if client then headers["X-Forwarded-For"] = client end
  if body then
    headers["Content-Type"] = "application/octet-stream"
    return wrk.format("POST", path, headers, body)
  end
  if close then headers["Connection"] = "close" end
  return wrk.format("GET", path, headers)
end
