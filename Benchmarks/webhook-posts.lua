-- wrk script for webhooks.py's `bound`: POSTs what a delivery is to the consumer (a body the service
-- built, read from the file BENCH_POST_BODY, with Standard Webhooks headers), each connection pausing
-- BENCH_DELAY_MS (whole milliseconds) before each request: delivery's POSTs, made by a client that costs
-- next to nothing and does no delivery work at all. With -cN the rate is about N * 1000 / (pause + latency).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk-summary.lua")

local file = assert(io.open(os.getenv("BENCH_POST_BODY"), "rb"))
wrk.method = "POST"
wrk.path = "/hooks/bound"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-id"] = "evt_1"
wrk.headers["webhook-timestamp"] = "1796527063"
wrk.headers["webhook-signature"] = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "2")

function delay()
    return pause
end
