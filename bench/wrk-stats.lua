-- wrk script for bench/run.sh: at the end of a run, print one machine-readable line.
-- Latencies are wrk's own (microseconds, closed loop, no coordinated-omission correction).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
