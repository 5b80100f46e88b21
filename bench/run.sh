#!/usr/bin/env bash
# Runs the benchmark: mc-proxy against HAProxy, nginx (stream + ssl_preread), sniproxy and a
# direct connection, in alternating rounds, and prints a markdown table (also written to
# BUILD_DIR/bench-results.md; every run's raw figures go to BUILD_DIR/bench-raw.txt).
#
# usage: bench/run.sh BUILD_DIR
#
# Environment (all optional):
#   BENCH_SHORT=1       smoke mode: one round, fractions of a second per phase (CI)
#   BENCH_MODES="..."   more shapes, any of (default none: today's four phases on loopback):
#                         fin    adds phase rate_fin: rate mode closing with FIN (client
#                                shutdown + wait for the backend's close) instead of RST
#                         c64    adds phases rate64 and rate64_fin: 64 concurrent loops, both
#                                close modes (517-byte ClientHello, 1 KiB reply)
#                         tls    adds phase tls: a real TLS handshake through the proxy to an
#                                OpenSSL backend (mcp-bench-tls), the proxy's share of its CPU
#                         netns  every phase across three network namespaces joined by veths
#                                with MTU 1500 instead of loopback (bench/netns.sh; root)
#   BENCH_PHASES="..."  exact phase list, overriding the one BENCH_MODES builds (phases: rate
#                       stream1 stream8 idle rate_fin rate64 rate64_fin tls)
#   BENCH_NETEM_MS=D    netns mode: tc netem delay of D ms on each veth end, i.e. D ms each way
#                       on each link (default 0; needs the kernel's sch_netem)
#   BENCH_NETNS_GSO=on  netns mode: keep the veths' default GSO (64 KiB super-packets) instead
#                       of one 1500-byte packet per skb (default off)
#   BENCH_CONNS64=C     loops of the rate64 phases (default 64)
#   BENCH_TLS_CONNS=C   concurrent client threads in the tls phase (default 8)
#   BENCH_TLS_SECS=S    tls measurement window (default: BENCH_RATE_SECS)
#   BENCH_ROUNDS=N      rounds (default 3; 1 in short mode)
#   BENCH_PEERS="..."   targets, in the order of round 1; each later round starts one further on
#                       (default: direct floor haproxy nginx sniproxy mc-proxy
#                       mc-proxy-copy);
#                       floor is mcp-bench-floor, a minimal relay (no parsing, routing, timers
#                       or log: the least a proxy can cost per connection); floor-nohalfclose
#                       (not in the default list) is the same closing both sides on the
#                       first EOF, as nginx and sniproxy do;
#                       mc-proxy-copy is mc-proxy with [proxy] relay = copy (no splice);
#                       mc-proxy-pp (not in the default list) is mc-proxy with proxy_protocol =
#                       on, and the client sends a PROXY v2 header before every ClientHello
#                       (in the same write): the cost of PROXY protocol in
#   BENCH_CONNS=C       concurrent loops in rate mode (default 32)
#   BENCH_RATE_SECS=S   rate measurement window (default 3)
#   BENCH_STREAM_SECS=S throughput window per connection count (default 2)
#   BENCH_IDLE=N        idle connections (default 5000; 200 in short mode)
#   BENCH_PORT=P        proxy listens on 127.0.0.1:P, the backend on P+1 (default 18443); in
#                       netns mode on 10.200.1.2:P and 10.200.2.2:P+1 inside the namespaces
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
TLSTOOL=$BUILD/bench/mcp-bench-tls
FLOOR=$BUILD/bench/mcp-bench-floor
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
CONNS64=${BENCH_CONNS64:-64}
TLS_CONNS=${BENCH_TLS_CONNS:-8}
TLS_SECS=${BENCH_TLS_SECS:-$RATE_SECS}
NETEM_MS=${BENCH_NETEM_MS:-0}
NETNS_GSO=${BENCH_NETNS_GSO:-off}
PEERS=${BENCH_PEERS:-direct floor haproxy nginx sniproxy mc-proxy mc-proxy-copy}
MODES=${BENCH_MODES:-}
NETNS=0
PHASES="rate stream1 stream8 idle"
for m in $MODES; do
  case $m in
    fin) PHASES="$PHASES rate_fin" ;;
    c64) PHASES="$PHASES rate64 rate64_fin" ;;
    tls) PHASES="$PHASES tls" ;;
    netns) NETNS=1 ;;
    *) echo "run.sh: unknown mode '$m' in BENCH_MODES (fin c64 tls netns)" >&2; exit 2 ;;
  esac
done
PHASES=${BENCH_PHASES:-$PHASES}
for p in $PHASES; do
  case $p in
    rate | stream1 | stream8 | idle | rate_fin | rate64 | rate64_fin | tls) ;;
    *) echo "run.sh: unknown phase '$p' in BENCH_PHASES" >&2; exit 2 ;;
  esac
done
if [ "$NETEM_MS" != 0 ] && [ "$NETNS" != 1 ]; then
  echo "run.sh: BENCH_NETEM_MS needs BENCH_MODES=netns" >&2
  exit 2
fi
PROXY_PORT=${BENCH_PORT:-18443}
BACKEND_PORT=$((PROXY_PORT + 1))
PROXY_ADDR=127.0.0.1:$PROXY_PORT
BACKEND_ADDR=127.0.0.1:$BACKEND_PORT
# Command prefixes that put the client side, the proxy and the backend in their namespaces
# (empty on loopback). `ip netns exec` execs the command, so $! stays the process's own PID.
IN_C=()
IN_P=()
IN_B=()
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
case " $PHASES " in
  *" tls "*)
    if [ ! -x "$TLSTOOL" ] || ! command -v openssl > /dev/null; then
      echo "run.sh: the tls phase needs $TLSTOOL (built when libssl-dev is installed) and openssl" >&2
      exit 2
    fi ;;
esac
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

if [ "$NETNS" = 1 ]; then
  . "$SRC/bench/netns.sh"
  CLEANUP_EXTRA=netns_down
  if ! netns_up "$NETEM_MS" "$NETNS_GSO" > "$TMP/netns.err" 2>&1; then
    echo "run.sh: network namespaces: $(cat "$TMP/netns.err")" >&2
    exit 2
  fi
  PROXY_ADDR=$NETNS_PROXY_IP:$PROXY_PORT
  BACKEND_ADDR=$NETNS_BACKEND_IP:$BACKEND_PORT
  IN_C=(ip netns exec "$NETNS_C")
  IN_P=(ip netns exec "$NETNS_P")
  IN_B=(ip netns exec "$NETNS_B")
fi

# mc-proxy-pp's first bytes: a PROXY v2 header (PROXY, TCP over IPv4, 192.0.2.7:40000 ->
# 198.51.100.1:443: documentation addresses, never the real peer) followed by the ClientHello.
PP_HELLO=$TMP/proxy-v2-hello.bin
printf '\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\xc6\x33\x64\x01\x9c\x40\x01\xbb' \
  > "$PP_HELLO"
cat "$HELLO" >> "$PP_HELLO"

# The tls phase's backend certificate: a throwaway self-signed ECDSA P-256 one for the route's
# name; the client verifies the server against it, so a misrouted handshake fails.
case " $PHASES " in
  *" tls "*)
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$TMP/tls-key.pem" -out "$TMP/tls-cert.pem" -days 2 -subj /CN=app.example.com \
      -addext subjectAltName=DNS:app.example.com > "$TMP/openssl.log" 2>&1; then
      echo "run.sh: cannot create the tls phase's certificate (see $TMP/openssl.log)" >&2
      exit 2
    fi ;;
esac

fill() { # template output [extra line for [proxy]]
  sed -e "s#@TMP@#$TMP#g" -e "s#@PROXY_ADDR@#$PROXY_ADDR#g" -e "s#@BACKEND_ADDR@#$BACKEND_ADDR#g" \
    -e "s#@WORKERS_LINE@#${WORKERS_LINE:-}${3:+\\n$3}#g" "$SRC/bench/peers/$1.in" > "$2"
}

# Whether a target can run here; prints the reason when it cannot.
available() {
  case $1 in
    direct) return 0 ;;
    floor | floor-nohalfclose)
      [ -x "$FLOOR" ] && return 0
      echo "$FLOOR not built" ;;
    haproxy | nginx | sniproxy)
      command -v "$1" > /dev/null && return 0
      echo "$1 not installed" ;;
    mc-proxy | mc-proxy-copy | mc-proxy-pp)
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
start_backend() { # reply|stream|tls [rst|fin]
  if [ "$1" = tls ]; then
    taskset -c "$LOAD_CPU" "${IN_B[@]}" "$TLSTOOL" server --listen "$BACKEND_ADDR" \
      --cert "$TMP/tls-cert.pem" --key "$TMP/tls-key.pem" \
      > "$TMP/backend.out" 2> "$TMP/backend.err" &
  else
    taskset -c "$LOAD_CPU" "${IN_B[@]}" "$BACKEND" --listen "$BACKEND_ADDR" --hello "$HELLO" \
      --mode "$1" --close "${2:-rst}" > "$TMP/backend.out" 2> "$TMP/backend.err" &
  fi
  BK_PID=$!
  STARTED+=("$BK_PID")
  probe "${IN_B[@]}" "$BACKEND_ADDR" "$1"
}

# Retries one exchange with ADDR until it succeeds (5 s at most); run in a namespace if given.
probe() { # [ip netns exec NS] addr reply|stream|tls
  local pre=()
  while [ $# -gt 2 ]; do pre+=("$1"); shift; done
  if [ "$2" = tls ]; then
    "${pre[@]}" "$TLSTOOL" probe --connect "$1" --ca "$TMP/tls-cert.pem" --duration 5 \
      2>> "$TMP/probe.err"
  else
    "${pre[@]}" "$LOAD" --connect "$1" --hello "${PROBE_HELLO:-$HELLO}" --mode probe \
      --expect "$2" --duration 5 2>> "$TMP/probe.err"
  fi
}

# Starts the proxy for a target on PROXY_CPU; PROXY_PID is the process started (for nginx the
# master, whose worker is found afterwards).
start_proxy() { # target
  local t=$1
  PROXY_PID=
  case $t in
    direct) return 0 ;;
    floor | floor-nohalfclose)
      local hc=on
      [ "$t" = floor-nohalfclose ] && hc=off
      taskset -c "$PROXY_CPU" "${IN_P[@]}" "$FLOOR" --listen "$PROXY_ADDR" --backend "$BACKEND_ADDR" \
        --half-close "$hc" > "$TMP/floor.log" 2>&1 & ;;
    haproxy)
      fill haproxy.cfg "$TMP/haproxy.cfg"
      taskset -c "$PROXY_CPU" "${IN_P[@]}" haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 & ;;
    nginx)
      fill nginx.conf "$TMP/nginx.conf"
      taskset -c "$PROXY_CPU" "${IN_P[@]}" nginx -c "$TMP/nginx.conf" -p "$TMP" -e "$TMP/nginx-error.log" \
        > "$TMP/nginx.log" 2>&1 & ;;
    sniproxy)
      fill sniproxy.conf "$TMP/sniproxy.conf"
      taskset -c "$PROXY_CPU" "${IN_P[@]}" sniproxy -f -c "$TMP/sniproxy.conf" > "$TMP/sniproxy.log" 2>&1 & ;;
    mc-proxy | mc-proxy-copy | mc-proxy-pp)
      if [ "$t" = mc-proxy-copy ]; then
        fill mc-proxy.ini "$TMP/mc-proxy.ini" "relay = copy"
      else
        fill mc-proxy.ini "$TMP/mc-proxy.ini"
      fi
      if [ "$t" = mc-proxy-pp ]; then
        # The listener section is the file's last: trust the client side's addresses.
        printf 'proxy_protocol = on\nproxy_from = 127.0.0.0/8\nproxy_from = 10.200.1.0/24\n' \
          >> "$TMP/mc-proxy.ini"
      fi
      rm -f "$TMP/mc-proxy.db"*
      # mc-proxy logs one line per connection to stderr, as its spec requires; to a file, as in
      # production. The peers are configured without per-connection logs.
      taskset -c "$PROXY_CPU" "${IN_P[@]}" "$MCP" server -c "$TMP/mc-proxy.ini" >> "$TMP/mc-proxy.log" 2>&1 & ;;
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
  local round=$1 t=$2 phase=$3 bmode=reply close=rst target_addr=$PROXY_ADDR line rc watch
  case $phase in
    stream1 | stream8) bmode=stream ;;
    tls) bmode=tls ;;
    *_fin) close=fin ;;
  esac
  [ "$t" = direct ] && target_addr=$BACKEND_ADDR
  if ! start_backend "$bmode" "$close"; then
    echo "round=$round target=$t phase=$phase setup_error=backend errors=1" >> "$RAW"
    stop_all
    return
  fi
  start_proxy "$t"
  # What the client sends first: the ClientHello, or for mc-proxy-pp a PROXY v2 header and it.
  local chello=$HELLO
  [ "$t" = mc-proxy-pp ] && chello=$PP_HELLO
  if ! PROBE_HELLO=$chello probe "${IN_C[@]}" "$target_addr" "$bmode"; then
    echo "round=$round target=$t phase=$phase setup_error=proxy_not_ready errors=1" >> "$RAW"
    stop_all
    return
  fi
  watch=$(watch_list)
  local args=(--connect "$target_addr" --hello "$chello" --warmup "$WARMUP")
  [ -n "$watch" ] && args+=(--watch "$watch")
  case $phase in
    rate) args+=(--mode rate --conns "$CONNS" --duration "$RATE_SECS") ;;
    stream1) args+=(--mode stream --conns 1 --duration "$STREAM_SECS") ;;
    stream8) args+=(--mode stream --conns 8 --duration "$STREAM_SECS") ;;
    idle) args+=(--mode idle --conns 64 --idle "$IDLE_N" --duration 60) ;;
    rate_fin) args+=(--mode rate --close fin --conns "$CONNS" --duration "$RATE_SECS") ;;
    rate64) args+=(--mode rate --conns "$CONNS64" --duration "$RATE_SECS") ;;
    rate64_fin) args+=(--mode rate --close fin --conns "$CONNS64" --duration "$RATE_SECS") ;;
    tls)
      # Same core as the plain phases; the TLS endpoints' own CPU is reported beside the proxy's.
      args=(client --connect "$target_addr" --ca "$TMP/tls-cert.pem" --warmup "$WARMUP"
        --conns "$TLS_CONNS" --duration "$TLS_SECS" --watch-backend "$BK_PID")
      [ -n "$watch" ] && args+=(--watch "$watch") ;;
  esac
  if [ "$phase" = tls ]; then
    line=$(taskset -c "$LOAD_CPU" "${IN_C[@]}" "$TLSTOOL" "${args[@]}" 2>> "$TMP/load.err")
  else
    line=$(taskset -c "$LOAD_CPU" "${IN_C[@]}" "$LOAD" "${args[@]}" 2>> "$TMP/load.err")
  fi
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
  echo "- command: \`$( [ "$SHORT" = 1 ] && echo 'BENCH_SHORT=1 ')${MODES:+BENCH_MODES=\"$MODES\" }${BENCH_PHASES:+BENCH_PHASES=\"$BENCH_PHASES\" }$( [ "$NETEM_MS" != 0 ] && echo "BENCH_NETEM_MS=$NETEM_MS ")bench/run.sh $BUILD\` ($(date -u +%Y-%m-%dT%H:%MZ))"
  machine
  echo "- $ROUNDS round(s), order of round 1: $PEERS (each later round starts one target further on); proxy on CPU $PROXY_CPU, generator and backend on CPU $LOAD_CPU"
  echo "- phases: $PHASES; ClientHello $(stat -c %s "$HELLO") bytes, ${WARMUP}s warm-up"
  case " $PHASES " in *" rate"*) echo "- rate: $CONNS loops (rate64*: $CONNS64), ${RATE_SECS}s window" ;; esac
  case " $PHASES " in *" stream"*) echo "- stream: ${STREAM_SECS}s window per run" ;; esac
  case " $PHASES " in *" idle "*) echo "- idle: $IDLE_N connections" ;; esac
  case " $PHASES " in *" tls "*) echo "- tls: $TLS_CONNS client threads, ${TLS_SECS}s window" ;; esac
  if [ "$NETNS" = 1 ]; then
    echo "- network: namespaces client/proxy/backend joined by veth pairs, MTU 1500, GSO $NETNS_GSO, netem delay ${NETEM_MS} ms per veth end; proxy $PROXY_ADDR, backend $BACKEND_ADDR"
  else
    echo "- network: loopback; proxy $PROXY_ADDR, backend $BACKEND_ADDR"
  fi
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
# Each round starts one target further on (round 2 with the second, ...), so that no target is
# always measured at the same point of a round: the machine's own drift (other tenants, the
# sockets in TIME_WAIT that each target leaves) then spreads over all of them.
for round in $(seq 1 "$ROUNDS"); do
  n=${#RUN_PEERS[@]}
  order=()
  for ((i = 0; i < n; i++)); do order+=("${RUN_PEERS[$(((i + round - 1) % n))]}"); done
  for t in "${order[@]}"; do
    for phase in $PHASES; do
      # The TLS client sends no PROXY header: mc-proxy-pp has no tls phase.
      [ "$t" = mc-proxy-pp ] && [ "$phase" = tls ] && continue
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
