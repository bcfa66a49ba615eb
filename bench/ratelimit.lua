-- One key, paced: each connection waits between requests so the total offered load is
-- about twice the key's rate (BENCH_DELAY_MS per connection).
local key = os.getenv("BENCH_KEY")
local wait = tonumber(os.getenv("BENCH_DELAY_MS") or "2")
request = function() return wrk.format("GET", "/", { ["x-api-key"] = key }) end
delay = function() return wait end
