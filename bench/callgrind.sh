#!/usr/bin/env bash
# Instructions per proxied connection of mc-proxy, counted by valgrind's callgrind: repeatable
# on a loaded machine, where the timed figures of run.sh are not. Two runs of the same shape,
# N1 and N2 connections; (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown. User
# space only: the kernel's share is not counted (see docs/PERFORMANCE.md).
#
# usage: bench/callgrind.sh BUILD_DIR [OUT_DIR]
#
# Environment (all optional):
#   CG_CLOSE=fin|rst    how the client and backend close (default fin)
#   CG_CONNS=C          concurrent client loops (default 64)
#   CG_N1, CG_N2        connections of the two runs (default 200 and 1200)
#   CG_RELAY=splice|copy  [proxy] relay (default splice)
#   CG_LOG=info|warn    [proxy] log_level (default info: one line per connection)
#   CG_PORT=P           proxy on 127.0.0.1:P, backend on P+1 (default 28453)
#   CG_PROXY=off|v2     off (default), or v2: the listener has proxy_protocol = on and every
#                       client connection starts with a PROXY v2 header (TCP4, 127.0.0.2:40000 ->
#                       127.0.0.1:443) sent in the same write as the ClientHello
#   CG_TOOL=callgrind|strace  callgrind (default) counts user-space instructions; strace runs
#                       the proxy under `strace -f -c` instead and prints system calls per
#                       connection, per call, the same way (difference of the two runs)
# Prints "ir_per_conn=X" and the top functions of the N2 run (callgrind_annotate, inclusive
# of nothing: self cost) to stdout; the callgrind files stay in OUT_DIR. With CG_TOOL=strace:
# "syscalls_per_conn=X" and one line per system call.
set -u

BUILD=${1:?usage: bench/callgrind.sh BUILD_DIR [OUT_DIR]}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=${2:-$(mktemp -d /tmp/mcp-callgrind.XXXXXX)}
mkdir -p "$OUT"
CLOSE=${CG_CLOSE:-fin}
CONNS=${CG_CONNS:-64}
N1=${CG_N1:-200}
N2=${CG_N2:-1200}
RELAY=${CG_RELAY:-splice}
LOGL=${CG_LOG:-info}
PORT=${CG_PORT:-28453}
PROXY=${CG_PROXY:-off}
TOOL=${CG_TOOL:-callgrind}
HELLO=$SRC/test/vectors/curl.bin
CLIENT_HELLO=$HELLO
LOAD=$BUILD/bench/mcp-bench-load
BACKEND=$BUILD/bench/mcp-bench-backend
MCP=$BUILD/cli/mc-proxy

case "$PROXY" in
  off) LISTENER_EXTRA= ;;
  v2)
    # PROXY v2: signature, version 2 + PROXY, TCP over IPv4, 12 address bytes, then
    # 127.0.0.2 -> 127.0.0.1, ports 40000 -> 443; the ClientHello follows in the same write.
    CLIENT_HELLO=$OUT/proxy-v2-hello.bin
    printf '\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x02\x7f\x00\x00\x01\x9c\x40\x01\xbb' \
      > "$CLIENT_HELLO"
    cat "$HELLO" >> "$CLIENT_HELLO"
    LISTENER_EXTRA="proxy_protocol = on
proxy_from = 127.0.0.1/32"
    ;;
  *)
    echo "callgrind.sh: CG_PROXY is off or v2" >&2
    exit 2
    ;;
esac
case "$TOOL" in
  callgrind | strace) ;;
  *)
    echo "callgrind.sh: CG_TOOL is callgrind or strace" >&2
    exit 2
    ;;
esac

STARTED=()
# shellcheck source=bench/procs.sh
. "$SRC/bench/procs.sh"
trap stop_all EXIT

# Ir of one run with n connections; the callgrind file is OUT/cg-n.out.
one_run() { # n
  local n=$1 dir=$OUT/run-$1
  rm -rf "$dir" && mkdir -p "$dir"
  cat > "$dir/mc-proxy.ini" << EOF
[database]
path = $dir/mc-proxy.db
[proxy]
connect_timeout = 5s
idle_timeout = 10m
handshake_timeout = 10s
shutdown_timeout = 1s
workers = 1
relay = $RELAY
log_level = $LOGL
[listener "127.0.0.1:$PORT"]
route = app.example.com 127.0.0.1:$((PORT + 1))
$LISTENER_EXTRA
EOF
  "$BACKEND" --listen "127.0.0.1:$((PORT + 1))" --hello "$HELLO" --mode reply --close "$CLOSE" \
    > "$dir/backend.out" 2>&1 &
  local bk=$!
  STARTED+=("$bk")
  if [ "$TOOL" = strace ]; then
    strace -f -c -o "$OUT/st-$n.out" "$MCP" server -c "$dir/mc-proxy.ini" \
      > "$dir/mc-proxy.log" 2>&1 &
  else
    valgrind --tool=callgrind --callgrind-out-file="$OUT/cg-$n.out" "$MCP" server \
      -c "$dir/mc-proxy.ini" > "$dir/mc-proxy.log" 2>&1 &
  fi
  local px=$!
  STARTED+=("$px")
  # Ready when a probe gets through (valgrind starts slowly); the probe is one connection of
  # both runs, so it cancels out.
  local _
  for _ in $(seq 1 60); do
    "$LOAD" --connect "127.0.0.1:$PORT" --hello "$CLIENT_HELLO" --mode probe --duration 1 \
      > /dev/null 2>&1 && break
    sleep 0.5
  done
  "$LOAD" --connect "127.0.0.1:$PORT" --hello "$CLIENT_HELLO" --mode rate --conns "$CONNS" \
    --close "$CLOSE" --max "$n" --duration 120 --warmup 0 > "$dir/load.out" 2>&1
  sleep 0.5
  if [ "$TOOL" = strace ]; then
    # strace does not pass SIGTERM on: stop the proxy itself (its only child) and let strace
    # write its table when it exits.
    kill -TERM "$(pgrep -P "$px" | head -1)" 2> /dev/null
  else
    kill -TERM "$px" 2> /dev/null
  fi
  wait "$px" 2> /dev/null
  kill -TERM "$bk" 2> /dev/null
  wait "$bk" 2> /dev/null
  STARTED=()
  local ok
  # Every connection line counts: with a RST close the outcome is error, not ok.
  ok=$(grep -c ' conn listener=' "$dir/mc-proxy.log")
  local ir
  if [ "$TOOL" = strace ]; then
    # strace -c's table: calls are column 4 (column 5 is errors when there are any, then the
    # name); the total line is the one named "total".
    ir=$(awk '$NF == "total" {print $4}' "$OUT/st-$n.out")
  else
    ir=$(grep '^summary:' "$OUT/cg-$n.out" | awk '{print $2}')
  fi
  echo "n=$n logged=$ok ir=$ir errors=$(grep -o 'errors=[0-9]*' "$dir/load.out" | head -1)" >&2
  echo "$ok $ir"
}

read -r ok1 ir1 < <(one_run "$N1")
read -r ok2 ir2 < <(one_run "$N2")
if [ -z "$ir1" ] || [ -z "$ir2" ] || [ "$ok2" -le "$ok1" ]; then
  echo "callgrind.sh: runs failed (see $OUT)" >&2
  exit 1
fi
echo "close=$CLOSE conns=$CONNS relay=$RELAY log=$LOGL proxy=$PROXY conns_counted=$((ok2 - ok1))"
if [ "$TOOL" = strace ]; then
  # Per call: (calls in N2 - calls in N1) / connections, two decimals; errors likewise.
  awk -v d=$((ok2 - ok1)) '
    function row(f, a) { if ($1 ~ /^[0-9.]+$/ && $NF != "total") {
        n = $NF; c = $4; e = (NF == 6) ? $5 : 0; calls[f, n] = c; errs[f, n] = e; names[n] = 1 } }
    FNR == 1 { f++ } { row(f) }
    END {
      for (n in names) {
        dc = (calls[2, n] - calls[1, n]) / d; de = (errs[2, n] - errs[1, n]) / d
        if (dc > 0.005 || dc < -0.005) printf "%8.2f %8.2f %s\n", dc, de, n
      }
    }' "$OUT/st-$N1.out" "$OUT/st-$N2.out" | sort -rn | sed '1i\   calls   errors syscall (per connection)'
  echo "syscalls_per_conn=$(awk -v a="$ir1" -v b="$ir2" -v d=$((ok2 - ok1)) 'BEGIN {printf "%.2f", (b - a) / d}')"
  exit 0
fi
echo "ir_per_conn=$(((ir2 - ir1) / (ok2 - ok1)))"
callgrind_annotate --inclusive=no "$OUT/cg-$N2.out" 2> /dev/null | sed -n '1,60p' | grep -v '^$' \
  | grep -E '^\s*[0-9,]+ ' | head -40
