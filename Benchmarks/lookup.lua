-- wrk script: GET /v1/jobs/{JobId} over JobIds loaded beforehand (one per line in BENCH_IDS).
local ids = {}
local threads = {}
local index = 0

function setup(thread)
    thread:set("thread_id", #threads + 1)
    table.insert(threads, thread)
end

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

-- Globals, not locals: done() reads them from each thread with thread:get().
ok = 0
failed = 0
function response(status, headers, body)
    if status >= 200 and status < 300 then ok = ok + 1 else failed = failed + 1 end
end

function done(summary, latency, requests)
    local total_ok, total_failed = 0, 0
    for _, thread in ipairs(threads) do
        total_ok = total_ok + thread:get("ok")
        total_failed = total_failed + thread:get("failed")
    end
    io.write(string.format(
        "BENCH_JSON {\"requests\":%d,\"ok\":%d,\"non2xx\":%d,\"socket_errors\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d}\n",
        summary.requests, total_ok, total_failed,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        summary.duration, latency:percentile(50), latency:percentile(99)))
end
