#!/usr/bin/env bash
# System calls per proxied connection of mc-proxy and its peers, counted by `strace -c -f`
# attached to the running proxy: like bench/callgrind.sh, a count that does not depend on how
# busy the machine is, but for the kernel boundary instead of user-space instructions.
#
# usage: bench/syscalls.sh BUILD_DIR
#
# Environment (all optional):
#   SC_TARGETS="..."  any of floor floor-nohalfclose haproxy sniproxy nginx mc-proxy (default: haproxy sniproxy mc-proxy)
#   SC_CLOSE=fin|rst  how client and backend close (default fin)
#   SC_CONNS=C        concurrent client loops (default 64)
#   SC_N=N            connections counted (default 2000), after 100 uncounted ones
#   SC_PORT=P         proxy on 127.0.0.1:P, backend on P+1 (default 28463)
# Prints, per target, the calls per connection of every system call above 0.01 and the total.
# The peers use the configs of bench/run.sh (bench/peers/), mc-proxy with workers = 1 and its
# connection log on (to a file), as in the benchmark. strace slows the proxy down a lot; only
# the counts are meant, never the time.
set -u

BUILD=${1:?usage: bench/syscalls.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
TARGETS=${SC_TARGETS:-haproxy sniproxy mc-proxy}
CLOSE=${SC_CLOSE:-fin}
CONNS=${SC_CONNS:-64}
N=${SC_N:-2000}
PORT=${SC_PORT:-28463}
HELLO=$SRC/test/vectors/curl.bin
LOAD=$BUILD/bench/mcp-bench-load
BACKEND=$BUILD/bench/mcp-bench-backend
PROXY_ADDR=127.0.0.1:$PORT
BACKEND_ADDR=127.0.0.1:$((PORT + 1))

TMP=$(mktemp -d /tmp/mcp-syscalls.XXXXXX)
# shellcheck source=bench/procs.sh
. "$SRC/bench/procs.sh"
trap 'stop_all; rm -rf "$TMP"' EXIT

# shellcheck source=bench/targets.sh
. "$SRC/bench/targets.sh"

one() { # target
  local t=$1 px
  "$BACKEND" --listen "$BACKEND_ADDR" --hello "$HELLO" --mode reply --close "$CLOSE" \
    > "$TMP/backend.out" 2>&1 &
  STARTED+=("$!")
  start_target "$t" || return 1
  px=${STARTED[-1]}
  "$LOAD" --connect "$PROXY_ADDR" --hello "$HELLO" --mode probe --duration 5 > /dev/null 2>&1
  "$LOAD" --connect "$PROXY_ADDR" --hello "$HELLO" --mode rate --conns "$CONNS" --close "$CLOSE" \
    --max 100 --duration 30 --warmup 0 > /dev/null 2>&1
  # The proxy and its children (nginx's worker, sniproxy's binder), with their threads.
  local pids=() p
  for p in $px $(pgrep -P "$px"); do pids+=(-p "$p"); done
  strace -f -c -o "$TMP/st.out" "${pids[@]}" 2> /dev/null &
  local st=$!
  sleep 1
  local out
  out=$("$LOAD" --connect "$PROXY_ADDR" --hello "$HELLO" --mode rate --conns "$CONNS" \
    --close "$CLOSE" --max "$N" --duration 300 --warmup 0 2>&1)
  sleep 0.5
  kill -INT "$st"
  wait "$st" 2> /dev/null
  stop_all
  local ok
  ok=$(echo "$out" | grep -o ' ok=[0-9]*' | cut -d= -f2)
  echo "$t: $(echo "$out" | grep -o 'errors=[0-9]*' | head -1), $ok connections counted"
  awk -v n="$ok" '$1 ~ /^[0-9.]+$/ && $NF != "total" {
      e = (NF == 6) ? $5 : 0; printf "  %7.2f %7.2f  %s\n", $4 / n, e / n, $NF }
    $NF == "total" { printf "  %7.2f %7.2f  total (calls, errors per connection)\n", $4 / n, ((NF == 6) ? $5 : 0) / n }' \
    "$TMP/st.out" | awk '$1 >= 0.01' | sort -k1,1nr
}

echo "close=$CLOSE conns=$CONNS n=$N"
for t in $TARGETS; do
  one "$t"
done
