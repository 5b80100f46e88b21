#!/usr/bin/env bash
# Runs the benchmark: mc-proxy against HAProxy, nginx (stream + ssl_preread), sniproxy and a
# direct connection, in alternating rounds, and prints a markdown table (also written to
# BUILD_DIR/bench-results.md; every run's raw figures go to BUILD_DIR/bench-raw.txt).
#
# usage: bench/run.sh BUILD_DIR
#
# Environment (all optional):
#   BENCH_SHORT=1       smoke mode: one round, fractions of a second per phase (CI)
#   BENCH_ROUNDS=N      rounds (default 3; 1 in short mode)
#   BENCH_PEERS="..."   targets, in round order (default: direct haproxy nginx sniproxy mc-proxy
#                       mc-proxy-copy);
#                       mc-proxy-copy is mc-proxy with [proxy] relay = copy (no splice)
#   BENCH_CONNS=C       concurrent loops in rate mode (default 32)
#   BENCH_RATE_SECS=S   rate measurement window (default 3)
#   BENCH_STREAM_SECS=S throughput window per connection count (default 2)
#   BENCH_IDLE=N        idle connections (default 5000; 200 in short mode)
#   BENCH_PORT=P        proxy listens on 127.0.0.1:P, the backend on P+1 (default 18443)
#   BENCH_PROXY_CPU / BENCH_LOAD_CPU  cores for the proxy / for generator and backend (0 / 1)
#   BENCH_HELLO=FILE    ClientHello to replay (default test/vectors/curl.bin, SNI app.example.com)
#   BENCH_KEEP=1        keep the temporary directory (configs, logs) after the run
#
# Exit status: 0 when every run of every target completed without a single error (refused,
# reset, misrouted, altered or short connection); 1 otherwise; 2 on usage or setup errors.
set -u

BUILD=${1:-}
if [ -z "$BUILD" ] || [ ! -d "$BUILD" ]; then
  echo "usage: bench/run.sh BUILD_DIR" >&2
  exit 2
fi
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
LOAD=$BUILD/bench/mcp-bench-load
BACKEND=$BUILD/bench/mcp-bench-backend
MCP=$BUILD/cli/mc-proxy
HELLO=${BENCH_HELLO:-$SRC/test/vectors/curl.bin}

SHORT=${BENCH_SHORT:-0}
if [ "$SHORT" = 1 ]; then
  ROUNDS=${BENCH_ROUNDS:-1}
  RATE_SECS=${BENCH_RATE_SECS:-0.5}
  STREAM_SECS=${BENCH_STREAM_SECS:-0.3}
  IDLE_N=${BENCH_IDLE:-200}
  WARMUP=0.1
else
  ROUNDS=${BENCH_ROUNDS:-3}
  RATE_SECS=${BENCH_RATE_SECS:-3}
  STREAM_SECS=${BENCH_STREAM_SECS:-2}
  IDLE_N=${BENCH_IDLE:-5000}
  WARMUP=0.5
fi
CONNS=${BENCH_CONNS:-32}
PEERS=${BENCH_PEERS:-direct haproxy nginx sniproxy mc-proxy mc-proxy-copy}
PROXY_PORT=${BENCH_PORT:-18443}
BACKEND_PORT=$((PROXY_PORT + 1))
PROXY_ADDR=127.0.0.1:$PROXY_PORT
BACKEND_ADDR=127.0.0.1:$BACKEND_PORT
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}

for tool in "$LOAD" "$BACKEND"; do
  if [ ! -x "$tool" ]; then
    echo "run.sh: $tool not built (cmake --build $BUILD --target bench-tools)" >&2
    exit 2
  fi
done
if ! command -v taskset > /dev/null; then
  echo "run.sh: taskset not found (Debian package util-linux)" >&2
  exit 2
fi
if [ ! -r "$HELLO" ]; then
  echo "run.sh: cannot read ClientHello $HELLO" >&2
  exit 2
fi

# A proxied connection costs a proxy two descriptors; the idle phase needs thousands.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ $((IDLE_N * 2 + 200)) -gt "$(ulimit -n)" ]; then
  echo "run.sh: ulimit -n $(ulimit -n) is too low for BENCH_IDLE=$IDLE_N" >&2
  exit 2
fi

TMP=$(mktemp -d /tmp/mcp-bench.XXXXXX)
RAW=$BUILD/bench-raw.txt
RESULTS=$BUILD/bench-results.md
: > "$RAW"

# Every process this script starts is recorded here and stopped by PID, also on Ctrl-C.
. "$SRC/bench/procs.sh"
cleanup_on_exit "${BENCH_KEEP:-0}"

fill() { # template output [extra line for [proxy]]
  sed -e "s#@TMP@#$TMP#g" -e "s#@PROXY_ADDR@#$PROXY_ADDR#g" -e "s#@BACKEND_ADDR@#$BACKEND_ADDR#g" \
    -e "s#@WORKERS_LINE@#${WORKERS_LINE:-}${3:+\\n$3}#g" "$SRC/bench/peers/$1.in" > "$2"
}

# Whether a target can run here; prints the reason when it cannot.
available() {
  case $1 in
    direct) return 0 ;;
    haproxy | nginx | sniproxy)
      command -v "$1" > /dev/null && return 0
      echo "$1 not installed" ;;
    mc-proxy | mc-proxy-copy)
      [ -x "$MCP" ] && return 0
      echo "$MCP not built" ;;
    *) echo "unknown target" ;;
  esac
  return 1
}

# mc-proxy is compared single-threaded like the peers: ask for one worker when this build knows
# the [proxy] workers key, and leave it out when it does not (older builds are single-threaded).
WORKERS_LINE=
if [ -x "$MCP" ]; then
  WORKERS_LINE="workers = 1"
  fill mc-proxy.ini "$TMP/check.ini"
  if ! "$MCP" check -c "$TMP/check.ini" > /dev/null 2>&1; then
    WORKERS_LINE=
  fi
  rm -f "$TMP/check.ini" "$TMP/mc-proxy.db"*
fi

BK_PID=
PROXY_PID=
start_backend() { # reply|stream
  taskset -c "$LOAD_CPU" "$BACKEND" --listen "$BACKEND_ADDR" --hello "$HELLO" --mode "$1" \
    > "$TMP/backend.out" 2> "$TMP/backend.err" &
  BK_PID=$!
  STARTED+=("$BK_PID")
  "$LOAD" --connect "$BACKEND_ADDR" --hello "$HELLO" --mode probe --expect "$1" --duration 5 \
    2> "$TMP/probe.err"
}

# Starts the proxy for a target on PROXY_CPU; PROXY_PID is the process started (for nginx the
# master, whose worker is found afterwards).
start_proxy() { # target
  local t=$1
  PROXY_PID=
  case $t in
    direct) return 0 ;;
    haproxy)
      fill haproxy.cfg "$TMP/haproxy.cfg"
      taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 & ;;
    nginx)
      fill nginx.conf "$TMP/nginx.conf"
      taskset -c "$PROXY_CPU" nginx -c "$TMP/nginx.conf" -p "$TMP" -e "$TMP/nginx-error.log" \
        > "$TMP/nginx.log" 2>&1 & ;;
    sniproxy)
      fill sniproxy.conf "$TMP/sniproxy.conf"
      taskset -c "$PROXY_CPU" sniproxy -f -c "$TMP/sniproxy.conf" > "$TMP/sniproxy.log" 2>&1 & ;;
    mc-proxy | mc-proxy-copy)
      if [ "$t" = mc-proxy-copy ]; then
        fill mc-proxy.ini "$TMP/mc-proxy.ini" "relay = copy"
      else
        fill mc-proxy.ini "$TMP/mc-proxy.ini"
      fi
      rm -f "$TMP/mc-proxy.db"*
      # mc-proxy logs one line per connection to stderr, as its spec requires; to a file, as in
      # production. The peers are configured without per-connection logs.
      taskset -c "$PROXY_CPU" "$MCP" server -c "$TMP/mc-proxy.ini" >> "$TMP/mc-proxy.log" 2>&1 & ;;
  esac
  PROXY_PID=$!
  STARTED+=("$PROXY_PID")
}

# The proxy process and its children (nginx's worker, sniproxy's binder), comma-separated.
watch_list() {
  [ -n "$PROXY_PID" ] || return 0
  echo "$PROXY_PID" $(pgrep -P "$PROXY_PID") | tr ' ' ','
}

# One measurement: fresh backend and proxy, a readiness probe through the proxy, the load, and
# the backend's own verdict on every ClientHello it received.
run_phase() { # round target phase
  local round=$1 t=$2 phase=$3 bmode=reply target_addr=$PROXY_ADDR line rc watch
  case $phase in stream1 | stream8) bmode=stream ;; esac
  [ "$t" = direct ] && target_addr=$BACKEND_ADDR
  if ! start_backend "$bmode"; then
    echo "round=$round target=$t phase=$phase setup_error=backend errors=1" >> "$RAW"
    stop_all
    return
  fi
  start_proxy "$t"
  if ! "$LOAD" --connect "$target_addr" --hello "$HELLO" --mode probe --expect "$bmode" \
    --duration 5 2>> "$TMP/probe.err"; then
    echo "round=$round target=$t phase=$phase setup_error=proxy_not_ready errors=1" >> "$RAW"
    stop_all
    return
  fi
  watch=$(watch_list)
  local args=(--connect "$target_addr" --hello "$HELLO" --warmup "$WARMUP")
  [ -n "$watch" ] && args+=(--watch "$watch")
  case $phase in
    rate) args+=(--mode rate --conns "$CONNS" --duration "$RATE_SECS") ;;
    stream1) args+=(--mode stream --conns 1 --duration "$STREAM_SECS") ;;
    stream8) args+=(--mode stream --conns 8 --duration "$STREAM_SECS") ;;
    idle) args+=(--mode idle --conns 64 --idle "$IDLE_N" --duration 60) ;;
  esac
  line=$(taskset -c "$LOAD_CPU" "$LOAD" "${args[@]}" 2>> "$TMP/load.err")
  rc=$?
  stop_all
  # The backend prints its counters when stopped; a hello that arrived altered, cut short or
  # followed by stray bytes is an error even if the client saw nothing wrong.
  local bk bad
  bk=$(cat "$TMP/backend.out")
  bad=$(echo "$bk" | tr ' ' '\n' | awk -F= '$1=="hello_bad"||$1=="hello_short"||$1=="extra_data"{s+=$2} END{print s+0}')
  echo "round=$round target=$t phase=$phase ${line#load } rc=$rc backend_bad=$bad" \
    "$(echo "$bk" | sed -e 's/^backend //' -e 's/\([a-z_]*\)=/bk_\1=/g')" >> "$RAW"
}

machine() {
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  command -v haproxy > /dev/null && echo "- $(haproxy -v 2> /dev/null | head -1 | cut -d' ' -f1-3)"
  command -v nginx > /dev/null && echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //') (stream, ssl_preread)"
  command -v sniproxy > /dev/null && echo "- $(sniproxy -V 2>&1 | head -1)"
  # The binary may be older than the checkout: say when it was built, and what HEAD is now.
  [ -x "$MCP" ] && echo "- $("$MCP" version 2> /dev/null | head -1) (binary built $(date -u -r "$MCP" +%Y-%m-%dT%H:%MZ), checkout at $(git -C "$SRC" log -1 --format=%h 2> /dev/null || echo '?')${WORKERS_LINE:+; $WORKERS_LINE})"
}

HEADER=$(
  echo "- command: \`$( [ "$SHORT" = 1 ] && echo 'BENCH_SHORT=1 ')bench/run.sh $BUILD\` ($(date -u +%Y-%m-%dT%H:%MZ))"
  machine
  echo "- $ROUNDS round(s), order per round: $PEERS; proxy on CPU $PROXY_CPU, generator and backend on CPU $LOAD_CPU"
  echo "- rate: $CONNS loops, ${RATE_SECS}s window after ${WARMUP}s warm-up; stream: ${STREAM_SECS}s per run; idle: $IDLE_N connections"
)

SKIPPED=()
RUN_PEERS=()
for t in $PEERS; do
  if why=$(available "$t"); then
    RUN_PEERS+=("$t")
  else
    SKIPPED+=("$t: $why")
  fi
done

echo "bench: ${#RUN_PEERS[@]} target(s), $ROUNDS round(s); raw results in $RAW" >&2
for round in $(seq 1 "$ROUNDS"); do
  for t in "${RUN_PEERS[@]}"; do
    for phase in rate stream1 stream8 idle; do
      run_phase "$round" "$t" "$phase"
    done
    echo "bench: round $round $t done" >&2
  done
done

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
{
  echo "$HEADER"
  for s in "${SKIPPED[@]}"; do echo "- skipped: $s"; done
  if [ "$SHORT" = 1 ]; then
    echo
    echo "Smoke mode (BENCH_SHORT=1): windows of a fraction of a second, one round. It proves the"
    echo "harness and every proxy work end to end; its figures are too short to compare."
  fi
  echo
  "$PY" "$SRC/bench/report.py" "$RAW"
} > "$RESULTS"
status=$?
cat "$RESULTS"
[ "$status" = 0 ] || exit 1
if grep -q 'setup_error=' "$RAW" || awk '{for(i=1;i<=NF;i++){split($i,kv,"=");
    if((kv[1]=="errors"||kv[1]=="backend_bad")&&kv[2]!=0)bad=1; if(kv[1]=="rc"&&kv[2]!=0)bad=1}}
    END{exit bad?0:1}' "$RAW"; then
  echo "bench: some runs had errors (see $RAW)" >&2
  exit 1
fi
exit 0
