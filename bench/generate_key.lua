-- wrk script for bench/generate_key.py: POST a new secret key, every request in a fresh org.
-- The service key comes from the KEYLEDGER_BENCH_TOKEN environment variable, the run's
-- prefix (unique per run and per wrk process) from KEYLEDGER_BENCH_RUN.
local token = os.getenv("KEYLEDGER_BENCH_TOKEN")
local run = os.getenv("KEYLEDGER_BENCH_RUN") or "run"
local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("thread_number", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

local counter = 0
local body = '{"name":"k","type":"secret"}'
local headers = {
  ["Authorization"] = "Bearer " .. token,
  ["Content-Type"] = "application/json",
}

function request()
  counter = counter + 1
  local org = string.format("b%s-%d-%d", run, thread_number, counter)
  return wrk.format("POST", "/v1/orgs/" .. org .. "/keys", headers, body)
end

created = 0  -- globals: done() reads them from each thread with thread:get
statuses = ""  -- every status other than 201, space-separated (rare unless overloaded)

function response(status, _, _)
  if status == 201 then
    created = created + 1
  elseif #statuses < 4000 then
    statuses = statuses .. " " .. status
  end
end

function done(summary, latency, _)
  local created_total = 0
  local others = ""
  for _, thread in ipairs(threads) do
    created_total = created_total + thread:get("created")
    others = others .. thread:get("statuses")
  end
  io.write(string.format(
    '{"requests": %d, "created": %d, "seconds": %.3f, "p50_ms": %.2f, "p99_ms": %.2f,'
      .. ' "errors": %d, "statuses": "%s"}\n',
    summary.requests, created_total, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout, others))
end
