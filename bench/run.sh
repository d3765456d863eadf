#!/usr/bin/env bash
# bench/run.sh - the sidecar's throughput, latency, CPU and memory against a direct baseline.
#
# Starts a local upstream (nginx, else bench/upstream.py) and the sidecar with
# bench/sidecar.yaml (dedicated listener, access log on -> /dev/null, metrics on), then drives
# both with wrk and prints a table: req/s, p50, p99, sidecar CPU-seconds, requests per sidecar
# CPU-second, idle and loaded RSS, and ratios to direct.
#
# The sidecar runs on CPU 0; wrk and the upstream share CPU 1. All traffic is on 127.0.0.1.
# Every process this script starts is stopped by its pid on exit; every wrk run is bounded.
#
# Usage: bench/run.sh [options]
#   -d, --duration S      seconds per measured wrk run (default 5)
#   -w, --warmup S        warm-up seconds before each target's first run (default 2)
#   -c, --conns LIST      connection counts, space or comma separated (default "1 32")
#   -p, --paths LIST      request paths (default "/small"; "/small /large" adds 64 KiB)
#   -r, --reps N          repetitions, interleaved across targets; medians are shown (default 1)
#   --variant NAME=DIR    also measure the sidecar from another source tree (e.g. a copy
#                         taken before a change), side by side in the same run; repeatable
#   --variants-only       measure only the --variant trees (A/B of a change: no direct, no ./)
#   --profile             after measuring, record the sidecar under load (32 connections,
#                         first path) with py-spy and print the top functions by self time
#   --out DIR             where results and logs go (default /tmp/sidecar-bench/<time>)
#
# Needs: wrk, taskset (util-linux), curl; nginx is optional (apt-get install wrk nginx).
# Python: $PYTHON (default /tmp/venv/bin/python, else python3) with the sidecar installed.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PYTHON=${PYTHON:-/tmp/venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)

DURATION=5
WARMUP=2
CONNS="1 32"
PATHS="/small"
REPS=1
PROFILE=0
OUT=""
VARIANTS=()
VARIANTS_ONLY=0
SIDECAR_CPU=0
LOAD_CPU=1
UP_PORT=${BENCH_UPSTREAM_PORT:-18180}
SIDECAR_PORT=${BENCH_LISTEN_PORT:-18182}   # variants take the next ports
ADMIN_PORT=${BENCH_ADMIN_PORT:-18190}

die() { echo "run.sh: $*" >&2; exit 2; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    -d|--duration) DURATION=$2; shift 2 ;;
    -w|--warmup) WARMUP=$2; shift 2 ;;
    -c|--conns) CONNS=${2//,/ }; shift 2 ;;
    -p|--paths) PATHS=${2//,/ }; shift 2 ;;
    -r|--reps) REPS=$2; shift 2 ;;
    --variant) VARIANTS+=("$2"); shift 2 ;;
    --variants-only) VARIANTS_ONLY=1; shift ;;
    --profile) PROFILE=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

for tool in wrk taskset curl; do
  command -v "$tool" >/dev/null || die "missing $tool: apt-get install wrk nginx util-linux curl"
done
if [ "$(nproc --all)" -lt 2 ]; then
  log "only one CPU: the sidecar, wrk and the upstream share it; figures will be pessimistic"
  LOAD_CPU=0
fi

OUT=${OUT:-/tmp/sidecar-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.tsv
printf 'target\tpath\tconns\trep\trequests\tduration_s\tp50_us\tp99_us\terrors\tcpu_s\tcpu0_other_pct\trss_idle_kb\trss_load_kb\n' >"$RESULTS"

# ---- processes: started in the background, remembered by pid, stopped on exit -------------
PIDS=()
cleanup() {
  local pid
  trap - EXIT
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() {  # forget PID: it has exited and was reaped, so cleanup must not signal it
  local keep=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  PIDS=("${keep[@]}")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # wait_port PORT PID: up to 15 s for PORT to accept while PID lives
  for _ in $(seq 150); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

cpu_ticks() {  # utime + stime of PID, in clock ticks
  local stat rest
  stat=$(cat "/proc/$1/stat") || { echo 0; return; }
  rest=${stat##*) }   # fields after "(comm)": state is field 3, utime 14, stime 15
  set -- $rest
  echo $(( ${12} + ${13} ))
}

rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

cpu_busy() {  # cpu_busy LABEL: "busy total" jiffies of /proc/stat's line LABEL (cpu0, cpu = all)
  awk -v c="$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

CLK_TCK=$(getconf CLK_TCK)

wait_quiet() {  # the machine may be shared: wait up to 10 s for others to go below 10% of a core
  local b0 n0 b1 n1 busy
  for _ in $(seq 20); do
    read -r b0 n0 < <(cpu_busy cpu)
    sleep 0.5
    read -r b1 n1 < <(cpu_busy cpu)
    busy=$(( n1 > n0 ? 100 * $(nproc --all) * (b1 - b0) / (n1 - n0) : 0 ))
    [ "$busy" -le 10 ] && return 0
  done
  log "other processes still use ${busy}% of a core; measuring anyway"
}

# ---- upstream --------------------------------------------------------------------------------
for port in "$UP_PORT" "$SIDECAR_PORT" "$ADMIN_PORT"; do
  port_open "$port" && die "port $port is in use (set BENCH_UPSTREAM_PORT / BENCH_LISTEN_PORT / BENCH_ADMIN_PORT)"
done

UP_DIR=$OUT/upstream
mkdir -p "$UP_DIR/www" "$UP_DIR/tmp"
head -c 1023 /dev/zero | tr '\0' 'x' >"$UP_DIR/www/small"; echo >>"$UP_DIR/www/small"
head -c 65536 /dev/urandom >"$UP_DIR/www/large"
if command -v nginx >/dev/null; then
  UPSTREAM_KIND="nginx $(nginx -v 2>&1 | sed 's/.*version: nginx\///')"
  sed "s/@PORT@/$UP_PORT/" "$BENCH_DIR/nginx-upstream.conf" >"$UP_DIR/nginx.conf"
  taskset -c "$LOAD_CPU" nginx -p "$UP_DIR/" -e stderr -c "$UP_DIR/nginx.conf" -g 'pid nginx.pid;' \
    >"$OUT/upstream.log" 2>&1 </dev/null &
else
  UPSTREAM_KIND="bench/upstream.py (nginx not installed: apt-get install nginx)"
  log "nginx not found; using the asyncio upstream (apt-get install nginx for a faster one)"
  taskset -c "$LOAD_CPU" "$PYTHON" "$BENCH_DIR/upstream.py" --port "$UP_PORT" \
    >"$OUT/upstream.log" 2>&1 </dev/null &
fi
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$UP_PORT" "$UP_PID" || { cat "$OUT/upstream.log" >&2; die "the upstream did not start"; }

# ---- sidecars: "sidecar" from this tree, plus any --variant trees ----------------------------
TARGETS=(direct)
declare -A PORT_OF=([direct]=$UP_PORT) PID_OF=() RSS_IDLE=([direct]=0) RSS_LOAD=([direct]=0)

start_sidecar() {  # start_sidecar NAME SRCDIR INDEX
  local name=$1 src=$2 i=$3 pid
  local port=$((SIDECAR_PORT + i)) admin=$((ADMIN_PORT + i))
  port_open "$port" && die "port $port is in use"
  port_open "$admin" && die "port $admin is in use"
  (
    cd "$src"
    export PYTHONPATH=$src BENCH_UPSTREAM_URL="http://127.0.0.1:$UP_PORT"
    export BENCH_LISTEN_PORT=$port BENCH_ADMIN_PORT=$admin
    exec taskset -c "$SIDECAR_CPU" "$PYTHON" -m sidecar run -c "$BENCH_DIR/sidecar.yaml"
  ) >/dev/null 2>"$OUT/$name.log" </dev/null &
  pid=$!
  PIDS+=("$pid")
  wait_port "$port" "$pid" || { cat "$OUT/$name.log" >&2; die "$name did not start"; }
  TARGETS+=("$name")
  PORT_OF[$name]=$port
  PID_OF[$name]=$pid
  RSS_LOAD[$name]=0
}

if [ "$VARIANTS_ONLY" = 1 ]; then
  [ ${#VARIANTS[@]} -gt 0 ] || die "--variants-only needs at least one --variant"
  [ "$PROFILE" = 0 ] || die "--profile measures ./ and cannot be combined with --variants-only"
  TARGETS=()
else
  start_sidecar sidecar "$ROOT" 0
fi
for i in "${!VARIANTS[@]}"; do
  spec=${VARIANTS[$i]}
  [[ $spec == *=* ]] || die "--variant wants NAME=DIR, got '$spec'"
  [ -d "${spec#*=}/sidecar" ] || die "--variant ${spec%%=*}: no sidecar package in ${spec#*=}"
  start_sidecar "${spec%%=*}" "$(cd "${spec#*=}" && pwd)" $((i + 1))
done

for name in "${TARGETS[@]}"; do
  for path in $PATHS; do
    got=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT_OF[$name]}$path")
    [ "$got" = 200 ] || die "$name: GET $path answered '$got', want 200"
  done
done
sleep 0.5   # idle RSS: started and answered one request per path, no load yet
for name in "${!PID_OF[@]}"; do RSS_IDLE[$name]=$(rss_kb "${PID_OF[$name]}"); done

# ---- measuring ----------------------------------------------------------------------------------
MAX_CONNS=$(printf '%s\n' $CONNS | sort -n | tail -n 1)
FIRST_PATH=${PATHS%% *}

WRK_PID=""
run_wrk() {  # run_wrk PORT PATH CONNS SECONDS OUTFILE: wrk in the background, pid in WRK_PID
  timeout $(($4 + 15)) taskset -c "$LOAD_CPU" wrk -t1 -c"$3" -d"$4s" --timeout 5s \
    -s "$BENCH_DIR/wrk-stats.lua" "http://127.0.0.1:$1$2" >"$5" 2>&1 &
  WRK_PID=$!   # timeout's pid: a TERM to it reaches wrk too
  PIDS+=("$WRK_PID")
}

wait_wrk() { local rc=0; wait "$WRK_PID" || rc=$?; forget "$WRK_PID"; return $rc; }

measure() {  # measure NAME PATH CONNS REP: one wrk run, one row of results.tsv
  local name=$1 path=$2 conns=$3 rep=$4 pid=${PID_OF[$1]:-}
  local raw="$OUT/wrk-$name-${path//\//}-c$conns-r$rep.txt" t0=0 t1=0 b0 n0 b1 n1 rss
  wait_quiet
  read -r b0 n0 < <(cpu_busy "cpu$SIDECAR_CPU")
  [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
  run_wrk "${PORT_OF[$name]}" "$path" "$conns" "$DURATION" "$raw"
  while kill -0 "$WRK_PID" 2>/dev/null; do   # loaded RSS: sampled while wrk runs
    if [ -n "$pid" ]; then
      rss=$(rss_kb "$pid"); [ "$rss" -gt "${RSS_LOAD[$name]}" ] && RSS_LOAD[$name]=$rss
    fi
    sleep 0.5
  done
  wait_wrk || log "$name $path c$conns: wrk failed (see $raw)"
  [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
  read -r b1 n1 < <(cpu_busy "cpu$SIDECAR_CPU")
  local line; line=$(grep '^RESULT' "$raw" || true)
  [ -n "$line" ] || { log "$name $path c$conns: no result (see $raw)"; return 0; }
  local requests duration_s p50_us p99_us errors kv
  for kv in ${line#RESULT }; do local "${kv%%=*}=${kv#*=}"; done
  local cpu_s other
  cpu_s=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
  # CPU 0 busy time that was not the sidecar's: others' processes disturbing the run
  other=$(awk -v b=$((b1 - b0)) -v n=$((n1 - n0)) -v s=$((t1 - t0)) \
    'BEGIN { printf "%.1f", (n > 0) ? 100 * (b - s) / n : 0 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$path" "$conns" "$rep" \
    "$requests" "$duration_s" "$p50_us" "$p99_us" "$errors" "$cpu_s" "$other" \
    "${RSS_IDLE[$name]}" "${RSS_LOAD[$name]}" >>"$RESULTS"
  log "$(printf '%-10s %-7s c%-3s rep %s: %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %5.2f s' \
    "$name" "$path" "$conns" "$rep" "$(awk -v r="$requests" -v d="$duration_s" 'BEGIN { print r / d }')" \
    "$(awk -v x="$p50_us" 'BEGIN { print x / 1000 }')" "$(awk -v x="$p99_us" 'BEGIN { print x / 1000 }')" "$cpu_s")"
}

{
  echo "date: $(date -Is)"
  echo "host: $(uname -sr), $(nproc --all) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "python: $("$PYTHON" -c 'import sys, uvloop; print(sys.version.split()[0], "uvloop", uvloop.__version__)')"
  echo "upstream: $UPSTREAM_KIND; wrk: $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f2)"
  echo "settings: ${DURATION}s runs, ${WARMUP}s warm-up, conns: $CONNS, paths: $PATHS, reps: $REPS; sidecar on CPU $SIDECAR_CPU, wrk + upstream on CPU $LOAD_CPU"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

declare -A WARM=()
for rep in $(seq "$REPS"); do
  for name in "${TARGETS[@]}"; do
    if [ "$WARMUP" != 0 ] && [ -z "${WARM[$name]:-}" ]; then
      run_wrk "${PORT_OF[$name]}" "$FIRST_PATH" "$MAX_CONNS" "$WARMUP" /dev/null
      wait_wrk || true
      WARM[$name]=1
    fi
    for path in $PATHS; do
      for conns in $CONNS; do measure "$name" "$path" "$conns" "$rep"; done
    done
  done
done

"$PYTHON" "$BENCH_DIR/report.py" "$RESULTS" --meta "$OUT/meta.txt" | tee "$OUT/summary.md"

# ---- optional profile ------------------------------------------------------------------------------
if [ "$PROFILE" = 1 ]; then
  SPY=$(dirname "$PYTHON")/py-spy
  [ -x "$SPY" ] || SPY=$(command -v py-spy || true)
  [ -n "$SPY" ] || die "--profile needs py-spy: $(dirname "$PYTHON")/pip install py-spy"
  log "profiling the sidecar: $FIRST_PATH, $MAX_CONNS connections, ${DURATION}s (py-spy, 250 Hz)"
  taskset -c "$LOAD_CPU" "$SPY" record --pid "${PID_OF[sidecar]}" --rate 250 --nonblocking --gil \
    --format raw --output "$OUT/profile.txt" --duration $((DURATION + 1)) >"$OUT/py-spy.log" 2>&1 &
  SPY_PID=$!
  PIDS+=("$SPY_PID")
  sleep 0.5
  run_wrk "${PORT_OF[sidecar]}" "$FIRST_PATH" "$MAX_CONNS" "$DURATION" "$OUT/wrk-profile.txt"
  wait_wrk || true
  wait "$SPY_PID" || { cat "$OUT/py-spy.log" >&2; die "py-spy failed"; }
  forget "$SPY_PID"
  "$PYTHON" "$BENCH_DIR/profile_summary.py" "$OUT/profile.txt" | tee "$OUT/profile-summary.txt"
fi
log "raw results, logs and summary in $OUT"
