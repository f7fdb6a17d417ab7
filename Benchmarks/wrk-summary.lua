-- Shared by ingest.lua and lookup.lua (loaded with dofile): numbers each wrk thread, counts answers
-- by status, and prints one BENCH_JSON line that bench.py reads.

threads = {}

function setup(thread)
    thread:set("thread_id", #threads + 1)
    table.insert(threads, thread)
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
