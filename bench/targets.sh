# Sourced by bench/syscalls.sh and bench/cpu0.sh: starts one target of the comparison on
# loopback, with the configs of bench/peers/ (bench/run.sh has its own, for namespaces and the
# mc-proxy variants). Needs SRC, BUILD, TMP, PROXY_ADDR and BACKEND_ADDR, and procs.sh's STARTED.

fill() { # template output
  sed -e "s#@TMP@#$TMP#g" -e "s#@PROXY_ADDR@#$PROXY_ADDR#g" -e "s#@BACKEND_ADDR@#$BACKEND_ADDR#g" \
    -e "s#@WORKERS_LINE@#workers = 1#g" "$SRC/bench/peers/$1.in" > "$2"
}

# Starts TARGET under the optional command PREFIX (e.g. taskset -c 0), its output in
# $TMP/px.log, and appends its PID to STARTED. Returns 1 for an unknown target.
start_target() { # target [prefix...]
  local t=$1 floor=$BUILD/bench/mcp-bench-floor
  shift
  case $t in
    floor) "$@" "$floor" --listen "$PROXY_ADDR" --backend "$BACKEND_ADDR" > "$TMP/px.log" 2>&1 & ;;
    floor-nohalfclose) "$@" "$floor" --listen "$PROXY_ADDR" --backend "$BACKEND_ADDR" \
      --half-close off > "$TMP/px.log" 2>&1 & ;;
    haproxy) fill haproxy.cfg "$TMP/haproxy.cfg"
      "$@" haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/px.log" 2>&1 & ;;
    sniproxy) fill sniproxy.conf "$TMP/sniproxy.conf"
      "$@" sniproxy -f -c "$TMP/sniproxy.conf" > "$TMP/px.log" 2>&1 & ;;
    nginx) fill nginx.conf "$TMP/nginx.conf"
      "$@" nginx -c "$TMP/nginx.conf" -p "$TMP" -e "$TMP/nginx-error.log" > "$TMP/px.log" 2>&1 & ;;
    mc-proxy) rm -f "$TMP/mc-proxy.db"*; fill mc-proxy.ini "$TMP/mc-proxy.ini"
      "$@" "$BUILD/cli/mc-proxy" server -c "$TMP/mc-proxy.ini" > "$TMP/px.log" 2>&1 & ;;
    *) echo "$(basename "$0"): unknown target $t" >&2; return 1 ;;
  esac
  STARTED+=("$!")
}
