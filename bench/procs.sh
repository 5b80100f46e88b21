# Sourced by bench/run.sh and bench/scale.sh: every process a script starts is appended to
# STARTED and stopped by PID, in reverse order of start (a proxy before the backend behind it).
STARTED=()

# SIGTERM, then (as every proxy here treats a second signal as "exit now") a second SIGTERM
# after 3 s, then SIGKILL after 2 s more. A process that needed more than the first signal is
# reported on stderr: the measurement is still valid, but it is a shutdown bug worth knowing.
stop_pid() {
  local pid=$1 i name
  name=$(cat "/proc/$pid/comm" 2> /dev/null || echo "PID $pid")
  kill -TERM "$pid" 2> /dev/null || return 0
  for i in $(seq 1 60); do
    kill -0 "$pid" 2> /dev/null || break
    [ "$i" = 30 ] && kill -TERM "$pid" 2> /dev/null
    [ "$i" = 50 ] && kill -KILL "$pid" 2> /dev/null
    sleep 0.1
  done
  if [ "$i" -gt 30 ]; then
    echo "$(basename "$0"): $name ($pid) did not exit within 3 s of SIGTERM" >&2
  fi
  wait "$pid" 2> /dev/null
  return 0
}

# On exit (also on Ctrl-C): stop everything, run $CLEANUP_EXTRA if set (run.sh removes its
# network namespaces there), then remove $TMP unless $1 is 1 (keep it).
CLEANUP_EXTRA=
cleanup_on_exit() {
  CLEANUP_KEEP=$1
  trap 'stop_all; [ -z "$CLEANUP_EXTRA" ] || $CLEANUP_EXTRA; if [ "$CLEANUP_KEEP" = 1 ]; then echo "$(basename "$0"): kept $TMP" >&2; else rm -rf "$TMP"; fi' EXIT
  trap 'exit 130' INT TERM
}

stop_all() {
  local i
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED[i]}"
  done
  STARTED=()
}
