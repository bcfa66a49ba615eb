-- Rotates through the bench keys so every request does a real lookup.
local keys = {}
local i = 0
local path = os.getenv("BENCH_PATH") or "/"
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end

request = function()
  i = i % #keys + 1
  return wrk.format("GET", path, { ["x-api-key"] = keys[i] })
end
