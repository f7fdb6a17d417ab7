-- wrk script: GET /v1/jobs/{JobId} over JobIds loaded beforehand (one per line in BENCH_IDS).
-- setup/response/done and the BENCH_JSON summary line live in wrk-summary.lua, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk-summary.lua")
local ids = {}
local index = 0

function init(args)
    for line in io.lines(os.getenv("BENCH_IDS")) do
        table.insert(ids, line)
    end
    index = (thread_id or 1) * 7919
end

function request()
    index = index + 1
    return wrk.format("GET", "/v1/jobs/" .. ids[(index % #ids) + 1])
end
