-- ingest.lua at a set pace: each connection pauses BENCH_DELAY_MS (whole milliseconds) before each
-- request, wrk's delay hook; with -cN the rate is about N * 1000 / (pause + latency) per second.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "ingest.lua")

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

function delay()
    return pause
end
