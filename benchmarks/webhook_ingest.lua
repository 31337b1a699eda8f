-- wrk script of benchmarks/webhook_ingest.py: POST pre-generated bodies, each once.
--
--   wrk -t T -c C -d MAX -s webhook_ingest.lua URL -- BODIES TOKEN T
--
-- BODIES holds one request body a line. Thread i of T sends lines i, i+T, ...
-- and stops once all of its lines are answered (a connection that is ready
-- after its thread sent its last line sends that thread's first line again: a
-- duplicate, which the server acknowledges as such). wrk itself runs for MAX
-- seconds whatever its threads do, so each thread prints "finished" when done
-- and the caller interrupts wrk (SIGINT) once all have. The time is the
-- threads' own, from the first request sent to the last answer received. At
-- the end one JSON line is printed: answers, non-2xx answers, seconds, and
-- the latency percentiles (microseconds) of wrk's own histogram.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } scout_timespec;
int clock_gettime(int clock, scout_timespec *now);
]])
local CLOCK_MONOTONIC = 1
local now_buffer = ffi.new("scout_timespec")

local function monotonic()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, now_buffer)
    return tonumber(now_buffer.tv_sec) + tonumber(now_buffer.tv_nsec) / 1e9
end

local threads = {}
local counter = 0

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
    table.insert(threads, thread)
end

function init(args)
    -- setup() of the next thread has not run yet: the count comes as an argument.
    local total_threads = tonumber(args[3])
    local headers = {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. args[2],
    }
    bodies = {}
    local line_number = 0
    for line in io.lines(args[1]) do
        if line_number % total_threads == id then
            table.insert(bodies, wrk.format("POST", nil, headers, line))
        end
        line_number = line_number + 1
    end
    sent = 0
    answered = 0
    failed = 0
    began = 0
    ended = 0
end

function request()
    if sent == 0 then
        began = monotonic()
    end
    sent = sent + 1
    return bodies[(sent - 1) % #bodies + 1]
end

function response(status, headers, body)
    answered = answered + 1
    if status < 200 or status > 299 then
        failed = failed + 1
    end
    if answered == #bodies then
        ended = monotonic()
        io.stdout:write("finished\n")
        io.stdout:flush()
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local failures, first, last = 0, math.huge, 0
    for _, thread in ipairs(threads) do
        failures = failures + thread:get("failed")
        first = math.min(first, thread:get("began"))
        last = math.max(last, thread:get("ended"))
    end
    io.write(string.format(
        '{"answers": %d, "failures": %d, "wall": %.6f, "p50_ms": %.3f, "p99_ms": %.3f}\n',
        summary.requests, failures, last - first,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000
    ))
end
