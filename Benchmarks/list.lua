-- wrk script: GET job lists in a loop, cycling through the paths in BENCH_PATHS (one per line), as
-- dashboards refreshing would. setup/response/done and the BENCH_JSON summary live in wrk-summary.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk-summary.lua")
local paths = {}
local index = 0

function init(args)
    for line in io.lines(os.getenv("BENCH_PATHS")) do
        table.insert(paths, line)
    end
    index = (thread_id or 1) * 7
end

function request()
    index = index + 1
    return wrk.format("GET", paths[(index % #paths) + 1])
end
