#!/usr/bin/env bash
# The whole proxy core's busy time per connection, for mc-proxy, its peers and the floor, in
# alternating rounds: a cross-check of run.sh's CPU µs/conn that no target can get for free.
#
# run.sh charges a target the utime + stime of its processes. This kernel accounts CPU time by
# ticks (CONFIG_TICK_CPU_ACCOUNTING, 250 Hz): kernel work that runs on the proxy's core while the
# proxy sleeps (softirqs, RCU callbacks freeing sockets, timers) is charged to whatever runs at
# the tick, so a target that leaves its core partly idle is charged less than one that saturates
# it. Here the proxy is alone on CPU 0 (generator and backend on CPU 1), and what is charged is
# everything CPU 0 did (user, nice, system, irq, softirq in /proc/stat) over the load's window.
#
# usage: bench/cpu0.sh BUILD_DIR
#
# Environment (all optional):
#   C0_TARGETS="..."  any of floor floor-nohalfclose haproxy nginx sniproxy mc-proxy
#                     (default: all six)
#   C0_SHAPES="..."   close/loops pairs (default: "rst/32 fin/64")
#   C0_ROUNDS=N       rounds (default 3); each round runs every target once per shape
#   C0_SECS=S         load window (default 3)
#   C0_PORT=P         proxy on 127.0.0.1:P, backend on P+1 (default 28473)
# Prints one line per run and, per shape, each target's median and range. A run with any
# failed connection prints ERROR and makes the script exit 1.
set -u

BUILD=${1:?usage: bench/cpu0.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
TARGETS=${C0_TARGETS:-floor floor-nohalfclose haproxy nginx sniproxy mc-proxy}
SHAPES=${C0_SHAPES:-rst/32 fin/64}
ROUNDS=${C0_ROUNDS:-3}
SECS=${C0_SECS:-3}
PORT=${C0_PORT:-28473}
HELLO=$SRC/test/vectors/curl.bin
LOAD=$BUILD/bench/mcp-bench-load
BACKEND=$BUILD/bench/mcp-bench-backend
PROXY_ADDR=127.0.0.1:$PORT
BACKEND_ADDR=127.0.0.1:$((PORT + 1))

TMP=$(mktemp -d /tmp/mcp-cpu0.XXXXXX)
# shellcheck source=bench/procs.sh
. "$SRC/bench/procs.sh"
cleanup_on_exit 0

# shellcheck source=bench/targets.sh
. "$SRC/bench/targets.sh"

# CPU 0's busy and idle ticks (USER_HZ) so far.
cpu0_ticks() {
  awk '$1 == "cpu0" { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat
}

one() { # target close conns
  local t=$1 close=$2 conns=$3
  taskset -c 1 "$BACKEND" --listen "$BACKEND_ADDR" --hello "$HELLO" --mode reply \
    --close "$close" > "$TMP/backend.out" 2>&1 &
  STARTED+=("$!")
  start_target "$t" taskset -c 0 || exit 2
  "$LOAD" --connect "$PROXY_ADDR" --hello "$HELLO" --mode probe --duration 5 > /dev/null 2>&1
  local b0 i0 b1 i1 out ok errors
  read -r b0 i0 < <(cpu0_ticks)
  out=$(taskset -c 1 "$LOAD" --connect "$PROXY_ADDR" --hello "$HELLO" --mode rate \
    --close "$close" --conns "$conns" --duration "$SECS" --warmup 0 2>&1)
  read -r b1 i1 < <(cpu0_ticks)
  stop_all
  ok=$(echo "$out" | grep -o ' ok=[0-9]*' | cut -d= -f2)
  errors=$(echo "$out" | grep -o ' errors=[0-9]*' | head -1 | cut -d= -f2)
  if [ -z "$ok" ] || [ "$ok" = 0 ] || [ "${errors:-1}" != 0 ]; then
    echo "$close/$conns $t ERROR (${errors:-?} errors)"
    return 1
  fi
  awk -v s="$close/$conns" -v t="$t" -v b=$((b1 - b0)) -v i=$((i1 - i0)) -v n="$ok" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%s %s %.1f us/conn, CPU 0 idle %.1f%%, %d conns\n",
      s, t, b * 1e6 / hz / n, 100 * i / (b + i), n }'
}

status=0
for r in $(seq 1 "$ROUNDS"); do
  for s in $SHAPES; do
    for t in $TARGETS; do
      one "$t" "${s%/*}" "${s#*/}" >> "$TMP/runs.txt" || status=1
      tail -n 1 "$TMP/runs.txt"
    done
  done
done

echo
echo "CPU 0 busy µs per connection, median (min-max) over $ROUNDS rounds:"
awk '$3 != "ERROR" { v[$1 " " $2] = v[$1 " " $2] " " $3 }
  END { for (k in v) print k, v[k] }' "$TMP/runs.txt" | sort | while read -r shape t vals; do
  printf '%-8s %-18s %s\n' "$shape" "$t" "$(echo "$vals" | tr ' ' '\n' | sort -n |
    awk '{a[NR] = $1} END { printf "%.1f (%.1f-%.1f)", a[int((NR + 1) / 2)], a[1], a[NR] }')"
done
exit $status
