#!/usr/bin/env bash
# Shows how mc-proxy's cost grows with the size of its state and its load (issue 4, "Scale"):
#   routes    rate mode with 10 vs SCALE_ROUTES (100,000) routes on the listener
#   firewall  rate mode with 10 vs SCALE_CIDRS (100,000) blocked CIDRs (none matches 127.0.0.1)
#   idle      proxy RSS with 100, SCALE_IDLE/10 and SCALE_IDLE (10,000, capped by the descriptor
#             limit) idle proxied connections
#   startup   exec -> "listening on" with 10 and 100,000 routes in the database, and RSS after
#   workers   rate mode with [proxy] workers = 1 vs 2, nothing pinned (SCALE_WORKERS=0 skips it)
#   lookup    the route and firewall lookups alone, in ns, 10 vs the large sizes (a small C
#             program compiled here against BUILD_DIR/lib/libmcproxy.a; skipped without cc);
#             and the route lookup with as many wildcard routes as exact ones (10 + 10 vs
#             SCALE_ROUTES + SCALE_ROUTES): exact hits, wildcard hits, misses
# Prints markdown tables (also written to OUT_DIR/scale-results.md; raw figures per run in
# OUT_DIR/scale-raw.txt).
#
# usage: bench/scale.sh BUILD_DIR
#
# Environment (all optional):
#   SCALE_SHORT=1        smoke mode: 1 round, 0.5 s windows, 2,000-entry tables, 500 idle conns
#   SCALE_ROUNDS=N       rounds of the rate experiments (default 6; 1 in short mode)
#   SCALE_IDLE_ROUNDS=N  rounds of the idle experiment (default 3; 1 in short mode)
#   SCALE_STARTS=N       starts per startup variant (default 5; 2 in short mode)
#   SCALE_RATE_SECS=S    rate measurement window (default 3; 0.5 in short mode)
#   SCALE_CONNS=C        concurrent loops in rate mode (default 32)
#   SCALE_ROUTES=N / SCALE_CIDRS=N / SCALE_IDLE=N   the large sizes (see above)
#   SCALE_WORKERS=0      skip the workers experiment
#   SCALE_PORT=P         proxy on 127.0.0.1:P, backend on P+1 (default 18643)
#   SCALE_OUT=DIR        where scale-results.md and scale-raw.txt go (default BUILD_DIR)
#   SCALE_KEEP=1         keep the temporary directory (configs, databases, logs)
#
# The proxy runs on CPU 0 (taskset -c 0), generator and backend on CPU 1, [proxy] workers = 1
# and log_level = warn (startup runs use info: the "listening on" line is an info line).
# Exit status: 0 when every run completed without an error; 1 otherwise; 2 on setup errors.
set -u

BUILD=${1:-}
if [ -z "$BUILD" ] || [ ! -d "$BUILD" ]; then
  echo "usage: bench/scale.sh BUILD_DIR" >&2
  exit 2
fi
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
LOAD=$BUILD/bench/mcp-bench-load
BACKEND=$BUILD/bench/mcp-bench-backend
MCP=$BUILD/cli/mc-proxy
HELLO=$SRC/test/vectors/curl.bin
HELPER=$SRC/bench/scale_report.py
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

SHORT=${SCALE_SHORT:-0}
if [ "$SHORT" = 1 ]; then
  ROUNDS=${SCALE_ROUNDS:-1}
  IDLE_ROUNDS=${SCALE_IDLE_ROUNDS:-1}
  STARTS=${SCALE_STARTS:-2}
  RATE_SECS=${SCALE_RATE_SECS:-0.5}
  BIG_ROUTES=${SCALE_ROUTES:-2000}
  BIG_CIDRS=${SCALE_CIDRS:-2000}
  BIG_IDLE=${SCALE_IDLE:-500}
  WARMUP=0.1
else
  ROUNDS=${SCALE_ROUNDS:-6}
  IDLE_ROUNDS=${SCALE_IDLE_ROUNDS:-3}
  STARTS=${SCALE_STARTS:-5}
  RATE_SECS=${SCALE_RATE_SECS:-3}
  BIG_ROUTES=${SCALE_ROUTES:-100000}
  BIG_CIDRS=${SCALE_CIDRS:-100000}
  BIG_IDLE=${SCALE_IDLE:-10000}
  WARMUP=0.5
fi
SMALL=10
SMALL_IDLE=100
CONNS=${SCALE_CONNS:-32}
PROXY_PORT=${SCALE_PORT:-18643}
PROXY_ADDR=127.0.0.1:$PROXY_PORT
BACKEND_ADDR=127.0.0.1:$((PROXY_PORT + 1))
PROXY_CPU=0
LOAD_CPU=1
OUT=${SCALE_OUT:-$BUILD}

for tool in "$LOAD" "$BACKEND" "$MCP"; do
  if [ ! -x "$tool" ]; then
    echo "scale.sh: $tool not built (cmake --build $BUILD --target bench-tools mc-proxy)" >&2
    exit 2
  fi
done
if ! command -v taskset > /dev/null; then
  echo "scale.sh: taskset not found (Debian package util-linux)" >&2
  exit 2
fi
mkdir -p "$OUT" || exit 2

# A proxied connection costs the proxy two descriptors; the generator and the backend, separate
# processes, one each.
ulimit -n 20000 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
NOFILE=$(ulimit -n)

TMP=$(mktemp -d /tmp/mcp-scale.XXXXXX)
RAW=$OUT/scale-raw.txt
RESULTS=$OUT/scale-results.md
: > "$RAW"

# Every process this script starts is stopped by PID, also on Ctrl-C.
. "$SRC/bench/procs.sh"
cleanup_on_exit "${SCALE_KEEP:-0}"

# The binaries are copied first: a rebuild of BUILD_DIR during the run must not mix two builds.
mkdir -p "$TMP/bin"
cp -p "$MCP" "$LOAD" "$BACKEND" "$TMP/bin/" || exit 2
MCP_ORIG=$MCP
MCP=$TMP/bin/mc-proxy
LOAD=$TMP/bin/mcp-bench-load
BACKEND=$TMP/bin/mcp-bench-backend
LIBMCP=
[ -r "$BUILD/lib/libmcproxy.a" ] && cp -p "$BUILD/lib/libmcproxy.a" "$TMP/bin/" &&
  LIBMCP=$TMP/bin/libmcproxy.a

# ---- state: route tables, firewalls, configs ----

echo "scale: generating $BIG_ROUTES routes and $BIG_CIDRS CIDRs" >&2
"$PY" "$HELPER" routes "$SMALL" "$BACKEND_ADDR" > "$TMP/routes-small.txt" &&
  "$PY" "$HELPER" routes "$BIG_ROUTES" "$BACKEND_ADDR" > "$TMP/routes-big.txt" &&
  "$PY" "$HELPER" cidrs "$SMALL" 1 > "$TMP/cidrs-small.txt" &&
  "$PY" "$HELPER" cidrs "$BIG_CIDRS" 2 > "$TMP/cidrs-big.txt" || {
  echo "scale.sh: generating the tables failed" >&2
  exit 2
}

mkconfig() { # out db routes-file cidrs-file workers log-level
  {
    echo "[database]"
    echo "path = $TMP/$2"
    echo "[proxy]"
    echo "connect_timeout = 5s"
    echo "idle_timeout = 10m"
    echo "handshake_timeout = 10s"
    echo "shutdown_timeout = 1s"
    echo "workers = $5"
    echo "log_level = $6"
    echo "[firewall]"
    cat "$TMP/$4"
    echo "[listener \"$PROXY_ADDR\"]"
    cat "$TMP/$3"
  } > "$TMP/$1"
}
# Configs that share a database seed it with the same listeners, routes and rules; only
# [proxy] differs between them, and [proxy] always comes from the config.
mkconfig base.ini base.db routes-small.txt cidrs-small.txt 1 warn
mkconfig base-info.ini base.db routes-small.txt cidrs-small.txt 1 info
mkconfig w2.ini base.db routes-small.txt cidrs-small.txt 2 warn
mkconfig routes.ini routes.db routes-big.txt cidrs-small.txt 1 warn
mkconfig routes-info.ini routes.db routes-big.txt cidrs-small.txt 1 info
mkconfig fw.ini fw.db routes-small.txt cidrs-big.txt 1 warn
mkconfig fw-info.ini fw.db routes-small.txt cidrs-big.txt 1 info
# The big database with a 10-route config: the database is the truth, the config is ignored.
mkconfig dbonly-info.ini routes.db routes-small.txt cidrs-small.txt 1 info
# First start on an empty database: seeding 100,000 routes is part of the measured time.
mkconfig seed-info.ini seed.db routes-big.txt cidrs-small.txt 1 info

if ! "$MCP" check -c "$TMP/base.ini" > "$TMP/check.out" 2>&1; then
  echo "scale.sh: this mc-proxy rejects the config:" >&2
  cat "$TMP/check.out" >&2
  exit 2
fi

# ---- measurements ----

BK_PID=
PROXY_PID=
start_backend() {
  taskset -c "$LOAD_CPU" "$BACKEND" --listen "$BACKEND_ADDR" --hello "$HELLO" --mode reply \
    > "$TMP/backend.out" 2> "$TMP/backend.err" &
  BK_PID=$!
  STARTED+=("$BK_PID")
  "$LOAD" --connect "$BACKEND_ADDR" --hello "$HELLO" --mode probe --duration 5 2>> "$TMP/probe.err"
}

# One startup: exec to "listening on", RSS, SIGTERM; the helper stops what it started.
run_startup() { # exp round variant label config [fresh-db]
  local line
  [ -n "${6:-}" ] && rm -f "$TMP/$6" "$TMP/$6-wal" "$TMP/$6-shm" "$TMP/$6.lock"
  line=$("$PY" "$HELPER" startup "$PROXY_CPU" 60 "$MCP" server -c "$TMP/$5" 2>> "$TMP/startup.err")
  echo "exp=$1 variant=$3 label=$4 round=$2 $line" >> "$RAW"
}

# One load measurement against a fresh backend and proxy. pin=1: proxy on PROXY_CPU, load and
# backend on LOAD_CPU; pin=0: nothing pinned.
run_phase() { # exp variant label round config pin mode [idle-n]
  local exp=$1 variant=$2 label=$3 round=$4 config=$5 pin=$6 mode=$7 idle_n=${8:-0}
  local pre_proxy=() pre_load=() line rc bk bad args
  if [ "$pin" = 1 ]; then
    pre_proxy=(taskset -c "$PROXY_CPU")
    pre_load=(taskset -c "$LOAD_CPU")
  fi
  local tag="exp=$exp variant=$variant label=$label round=$round"
  if ! start_backend; then
    echo "$tag setup_error=backend errors=1" >> "$RAW"
    stop_all
    return
  fi
  "${pre_proxy[@]}" "$MCP" server -c "$TMP/$config" >> "$TMP/mc-proxy.log" 2>&1 &
  PROXY_PID=$!
  STARTED+=("$PROXY_PID")
  # A 100,000-entry state takes a moment to load: the probe waits for it, bounded.
  if ! "$LOAD" --connect "$PROXY_ADDR" --hello "$HELLO" --mode probe --duration 30 \
    2>> "$TMP/probe.err"; then
    echo "$tag setup_error=proxy_not_ready errors=1" >> "$RAW"
    stop_all
    return
  fi
  args=(--connect "$PROXY_ADDR" --hello "$HELLO" --warmup "$WARMUP" --watch "$PROXY_PID")
  case $mode in
    rate) args+=(--mode rate --conns "$CONNS" --duration "$RATE_SECS") ;;
    idle) args+=(--mode idle --conns 64 --idle "$idle_n" --duration 60) ;;
  esac
  line=$("${pre_load[@]}" "$LOAD" "${args[@]}" 2>> "$TMP/load.err")
  rc=$?
  stop_all
  # The backend's own verdict: a hello that arrived altered, cut short or followed by stray
  # bytes is an error even if the client saw nothing wrong.
  bk=$(cat "$TMP/backend.out")
  bad=$(echo "$bk" | tr ' ' '\n' |
    awk -F= '$1=="hello_bad"||$1=="hello_short"||$1=="extra_data"{s+=$2} END{print s+0}')
  echo "$tag ${line#load } rc=$rc backend_bad=$bad" >> "$RAW"
}

# Descriptors the proxy holds with no connection (listener, epoll, database, pipes, ...): the
# idle experiment can only open as many connections as the rest of the limit allows.
proxy_base_fds() {
  local n=-1
  if start_backend; then
    taskset -c "$PROXY_CPU" "$MCP" server -c "$TMP/base.ini" >> "$TMP/mc-proxy.log" 2>&1 &
    PROXY_PID=$!
    STARTED+=("$PROXY_PID")
    if "$LOAD" --connect "$PROXY_ADDR" --hello "$HELLO" --mode probe --duration 30 \
      2>> "$TMP/probe.err"; then
      sleep 0.2
      n=$(ls "/proc/$PROXY_PID/fd" 2> /dev/null | wc -l)
    fi
  fi
  stop_all
  echo "$n"
}

commas() { "$PY" -c 'import sys; print(f"{int(sys.argv[1]):,}")' "$1"; }
# The lookups alone: what a route or firewall table of a given size adds to one connection,
# measured in ns where a whole connection (~40 µs here) is too noisy to show it.
build_lookup() {
  [ -n "$LIBMCP" ] && command -v cc > /dev/null && command -v pkg-config > /dev/null || return 1
  cat > "$TMP/scale_lookup.c" << 'EOF'
/* scale-lookup: the data plane's two per-connection lookups, timed on their own, so that their
 * growth with table size is visible below the noise of a whole proxied connection.
 *   scale-lookup routes FILE    FILE holds "route = HOST BACKEND" lines
 *   scale-lookup firewall FILE  FILE holds "block_cidr = CIDR" lines
 *   scale-lookup wild FILE      FILE's routes plus as many wildcards "*.wK.example.net" 
 * Prints one key=value line: the table size and ns per lookup for the benchmark's own case
 * (app.example.com / client 127.0.0.1, the same entry every time, so it stays in cache) and for
 * a stream of 65,536 random keys (existing hostnames / random IPv4 clients), which miss the
 * cache the way many different clients would. Each figure is the best of 5 repetitions. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcproxy/firewall.h"
#include "mcproxy/routes.h"

#define NKEYS 65536
#define REPS 5

static volatile uintptr_t sink;

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64: a fixed seed, so every run looks up the same keys. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Reads the value after "KEY = " on every line of the file that starts with it. */
static char **read_values(const char *path, const char *key, size_t *n)
{
  FILE *f = fopen(path, "r");
  char line[512];
  size_t cap = 1024, klen = strlen(key);
  char **v = malloc(cap * sizeof(*v));
  *n = 0;
  if (!f || !v) {
    perror(path);
    exit(2);
  }
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, key, klen) != 0 || strncmp(line + klen, " = ", 3) != 0)
      continue;
    line[strcspn(line, "\r\n")] = '\0';
    if (*n == cap) {
      cap *= 2;
      v = realloc(v, cap * sizeof(*v));
      if (!v)
        exit(2);
    }
    v[(*n)++] = strdup(line + klen + 3);
  }
  fclose(f);
  return v;
}

/* The best of REPS timings of iters evaluations of expr (which may use i), in ns each. */
#define BEST_NS(iters, expr) \
  ({ \
    double best_ = 1e30; \
    for (int r_ = 0; r_ < REPS; r_++) { \
      uint64_t t0_ = now_ns(); \
      for (size_t i = 0; i < (iters); i++) \
        sink += (uintptr_t)(expr); \
      double ns_ = (double)(now_ns() - t0_) / (double)(iters); \
      if (ns_ < best_) \
        best_ = ns_; \
    } \
    best_; \
  })

static int bench_routes(const char *path)
{
  size_t n;
  char **lines = read_values(path, "route", &n);
  mcp_routes_t *rt = NULL;
  mcp_routes_new(&rt);
  char **names = malloc(n * sizeof(*names));
  size_t *lens = malloc(NKEYS * sizeof(*lens));
  const char **keys = malloc(NKEYS * sizeof(*keys));
  if (!rt || !names || !lens || !keys)
    return 2;
  for (size_t i = 0; i < n; i++) {
    char *sp = strchr(lines[i], ' ');
    if (!sp)
      return 2;
    *sp = '\0';
    names[i] = lines[i];
    if (mcp_routes_put(rt, lines[i], sp + 1) != 0) {
      fprintf(stderr, "scale-lookup: bad route %s\n", lines[i]);
      return 2;
    }
  }
  for (size_t i = 0; i < NKEYS; i++) {
    keys[i] = names[rnd() % n];
    lens[i] = strlen(keys[i]);
  }
  const char *app = "app.example.com";
  if (!mcp_routes_lookup(rt, app, strlen(app)))
    return 1; /* the benchmark's route must be there */
  double hit = BEST_NS(2000000, mcp_routes_lookup(rt, app, 15));
  double rand_ns = BEST_NS(2000000, mcp_routes_lookup(rt, keys[i % NKEYS], lens[i % NKEYS]));
  size_t missing = 0;
  for (size_t i = 0; i < NKEYS; i++)
    missing += mcp_routes_lookup(rt, keys[i], lens[i]) == NULL;
  printf("lookup kind=routes n=%zu ns_same=%.1f ns_random=%.1f errors=%zu\n",
         mcp_routes_count(rt), hit, rand_ns, missing);
  mcp_routes_unref(rt);
  return missing ? 1 : 0;
}

/* Exact and wildcard routes in one table: exact hits, wildcard hits three labels below a
 * pattern (one exact probe and two wildcard probes), and misses (every probe fails). */
static int bench_wild(const char *path)
{
  size_t n;
  char **lines = read_values(path, "route", &n);
  mcp_routes_t *rt = NULL;
  mcp_routes_new(&rt);
  char **exact = malloc(n * sizeof(*exact));
  char **wild = malloc(NKEYS * sizeof(*wild));
  char **miss = malloc(NKEYS * sizeof(*miss));
  size_t *lens = malloc(3 * NKEYS * sizeof(*lens));
  const char **keys = malloc(NKEYS * sizeof(*keys));
  char pat[96];
  if (!rt || !exact || !wild || !miss || !lens || !keys || n == 0)
    return 2;
  const char *backend = NULL;
  for (size_t i = 0; i < n; i++) {
    char *sp = strchr(lines[i], ' ');
    if (!sp)
      return 2;
    *sp = '\0';
    exact[i] = lines[i];
    backend = sp + 1;
    if (mcp_routes_put(rt, lines[i], backend) != 0)
      return 2;
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(pat, sizeof(pat), "*.w%zu.example.net", i);
    if (mcp_routes_put_ex(rt, pat, backend, MCP_SEND_PROXY_V2) != 0)
      return 2;
  }
  for (size_t i = 0; i < NKEYS; i++) {
    keys[i] = exact[rnd() % n];
    lens[i] = strlen(keys[i]);
    snprintf(pat, sizeof(pat), "a.b.w%zu.example.net", (size_t)(rnd() % n));
    wild[i] = strdup(pat);
    lens[NKEYS + i] = strlen(pat);
    snprintf(pat, sizeof(pat), "a.b.m%zu.example.org", (size_t)(rnd() % n));
    miss[i] = strdup(pat);
    lens[2 * NKEYS + i] = strlen(pat);
  }
  size_t errors = 0;
  for (size_t i = 0; i < NKEYS; i++) {
    mcp_route_match_t m;
    errors += mcp_routes_match(rt, keys[i], lens[i], &m) != 0 || m.kind != MCP_ROUTE_EXACT;
    errors += mcp_routes_match(rt, wild[i], lens[NKEYS + i], &m) != 0 ||
              m.kind != MCP_ROUTE_WILDCARD || m.send_proxy != MCP_SEND_PROXY_V2;
    errors += mcp_routes_lookup(rt, miss[i], lens[2 * NKEYS + i]) != NULL;
  }
  double same = BEST_NS(2000000, mcp_routes_lookup(rt, keys[0], lens[0]));
  double rand_ns = BEST_NS(2000000, mcp_routes_lookup(rt, keys[i % NKEYS], lens[i % NKEYS]));
  double wild_ns =
      BEST_NS(2000000, mcp_routes_lookup(rt, wild[i % NKEYS], lens[NKEYS + i % NKEYS]));
  double miss_ns =
      BEST_NS(2000000, mcp_routes_lookup(rt, miss[i % NKEYS], lens[2 * NKEYS + i % NKEYS]));
  printf("lookup kind=wild n=%zu ns_same=%.1f ns_random=%.1f ns_wild=%.1f ns_miss=%.1f"
         " errors=%zu\n",
         mcp_routes_count(rt), same, rand_ns, wild_ns, miss_ns, errors);
  mcp_routes_unref(rt);
  return errors ? 1 : 0;
}

static int bench_firewall(const char *path)
{
  size_t n;
  char **cidrs = read_values(path, "block_cidr", &n);
  mcp_firewall_t *fw = NULL;
  mcp_firewall_new(&fw);
  struct sockaddr_in *clients = malloc(NKEYS * sizeof(*clients));
  if (!fw || !clients)
    return 2;
  for (size_t i = 0; i < n; i++)
    if (mcp_firewall_add(fw, MCP_FIREWALL_CIDR, cidrs[i]) != 0) {
      fprintf(stderr, "scale-lookup: bad CIDR %s\n", cidrs[i]);
      return 2;
    }
  if (mcp_firewall_seal(fw) != 0)
    return 2;
  struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  if (mcp_firewall_check(fw, (struct sockaddr *)&local))
    return 1; /* 127.0.0.1 must pass, or the load runs would measure refusals */
  for (size_t i = 0; i < NKEYS; i++)
    clients[i] = (struct sockaddr_in){.sin_family = AF_INET,
                                      .sin_addr.s_addr = (uint32_t)rnd()};
  double same = BEST_NS(2000000, mcp_firewall_check(fw, (struct sockaddr *)&local));
  double rand_ns =
      BEST_NS(2000000, mcp_firewall_check(fw, (struct sockaddr *)&clients[i % NKEYS]));
  printf("lookup kind=firewall n=%zu ns_same=%.1f ns_random=%.1f errors=0\n",
         mcp_firewall_count(fw), same, rand_ns);
  mcp_firewall_unref(fw);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc == 3 && !strcmp(argv[1], "routes"))
    return bench_routes(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "firewall"))
    return bench_firewall(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "wild"))
    return bench_wild(argv[2]);
  fprintf(stderr, "usage: scale-lookup routes|firewall|wild FILE\n");
  return 2;
}
EOF
  cc -O2 -std=gnu11 -Wall -I"$SRC/include" "$TMP/scale_lookup.c" "$LIBMCP" \
    $(pkg-config --libs libuv libmaxminddb sqlite3) -lpthread -o "$TMP/bin/scale-lookup" \
    2> "$TMP/lookup-build.err"
}
run_lookup() { # variant label kind file [exp]
  local line rc
  line=$(taskset -c "$PROXY_CPU" "$TMP/bin/scale-lookup" "$3" "$TMP/$4" 2>> "$TMP/lookup.err")
  rc=$?
  echo "exp=${5:-lookup} variant=$1 label=$2 round=1 ${line#lookup } rc=$rc" >> "$RAW"
}

BIG_LABEL_R=$(commas "$BIG_ROUTES")
BIG_LABEL_C=$(commas "$BIG_CIDRS")
START_AT=$(date -u +%Y-%m-%dT%H:%MZ)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

# Seed the databases (the first start writes the config's state into an empty database), so that
# every measured start below, and every load run, finds them seeded.
echo "scale: seeding the databases" >&2
for c in base-info.ini routes-info.ini fw-info.ini; do
  run_startup prepare 0 "$c" "$c" "$c"
done

echo "scale: startup, $STARTS start(s) per variant" >&2
for round in $(seq 1 "$STARTS"); do
  run_startup startup "$round" s10 "${SMALL}_routes" base-info.ini
  run_startup startup "$round" s100k "${BIG_LABEL_R}_routes_(config_and_DB)" routes-info.ini
  run_startup startup "$round" sdb "${BIG_LABEL_R}_routes_in_DB,_${SMALL}_in_config" dbonly-info.ini
  run_startup startup "$round" sfw "${SMALL}_routes,_${BIG_LABEL_C}_CIDRs" fw-info.ini
  run_startup startup "$round" seed "first_start:_seeding_${BIG_LABEL_R}_routes" seed-info.ini \
    seed.db
done

echo "scale: routes and firewall, $ROUNDS round(s)" >&2
for round in $(seq 1 "$ROUNDS"); do
  run_phase base small "${SMALL}_routes,_${SMALL}_CIDRs" "$round" base.ini 1 rate
  run_phase routes big "${BIG_LABEL_R}_routes,_${SMALL}_CIDRs" "$round" routes.ini 1 rate
  run_phase firewall big "${SMALL}_routes,_${BIG_LABEL_C}_CIDRs" "$round" fw.ini 1 rate
done

BASE_FDS=$(proxy_base_fds)
IDLE_NOTE=
if [ "$BASE_FDS" -gt 0 ] && [ $((2 * BIG_IDLE + BASE_FDS + 8)) -gt "$NOFILE" ]; then
  capped=$(((NOFILE - BASE_FDS - 8) / 2))
  IDLE_NOTE="idle: $BIG_IDLE connections need $((2 * BIG_IDLE + BASE_FDS)) descriptors in the"
  IDLE_NOTE+=" proxy ($BASE_FDS of its own), over ulimit -n $NOFILE: capped at $capped"
  BIG_IDLE=$capped
fi
MID_IDLE=$((BIG_IDLE / 10))
echo "scale: idle, $SMALL_IDLE, $MID_IDLE and $BIG_IDLE connections, $IDLE_ROUNDS round(s)" >&2
for round in $(seq 1 "$IDLE_ROUNDS"); do
  run_phase idle small "$(commas "$SMALL_IDLE")" "$round" base.ini 1 idle "$SMALL_IDLE"
  if [ "$MID_IDLE" -gt "$SMALL_IDLE" ]; then
    run_phase idle mid "$(commas "$MID_IDLE")" "$round" base.ini 1 idle "$MID_IDLE"
  fi
  run_phase idle big "$(commas "$BIG_IDLE")" "$round" base.ini 1 idle "$BIG_IDLE"
done

if [ "${SCALE_WORKERS:-1}" != 0 ]; then
  echo "scale: workers 1 vs 2 (unpinned), $ROUNDS round(s)" >&2
  for round in $(seq 1 "$ROUNDS"); do
    run_phase workers w1 "workers_=_1" "$round" base.ini 0 rate
    run_phase workers w2 "workers_=_2" "$round" w2.ini 0 rate
  done
fi

LOOKUP_NOTE=
if build_lookup; then
  echo "scale: lookups alone" >&2
  run_lookup r10 "${SMALL}_routes" routes routes-small.txt
  run_lookup rbig "${BIG_LABEL_R}_routes" routes routes-big.txt
  run_lookup c10 "${SMALL}_CIDRs" firewall cidrs-small.txt
  run_lookup cbig "${BIG_LABEL_C}_CIDRs" firewall cidrs-big.txt
  run_lookup w10 "${SMALL}_exact_+_${SMALL}_wildcard" wild routes-small.txt wildlookup
  run_lookup wbig "${BIG_LABEL_R}_exact_+_${BIG_LABEL_R}_wildcard" wild routes-big.txt wildlookup
else
  LOOKUP_NOTE="lookups alone: skipped (needs cc, pkg-config and $BUILD/lib/libmcproxy.a)"
fi

{
  echo "- command: \`$([ "$SHORT" = 1 ] && echo 'SCALE_SHORT=1 ')bench/scale.sh $BUILD\` ($START_AT, load average at start: $LOADAVG)"
  echo "- machine: $(nproc) CPUs, kernel $(uname -r); $("$MCP" version 2> /dev/null | head -1) (binary $MCP_ORIG built $(date -u -r "$MCP" +%Y-%m-%dT%H:%MZ), checkout at $(git -C "$SRC" log -1 --format=%h 2> /dev/null || echo '?'))"
  echo "- rate: $CONNS loops, ${RATE_SECS}s window after ${WARMUP}s warm-up, $ROUNDS round(s) alternating; idle: $IDLE_ROUNDS round(s); startup: $STARTS start(s) per variant, alternating"
  echo "- proxy descriptors with no connection: $BASE_FDS; ulimit -n $NOFILE"
  [ -n "$IDLE_NOTE" ] && echo "- $IDLE_NOTE"
  [ -n "$LOOKUP_NOTE" ] && echo "- $LOOKUP_NOTE"
  if [ "$SHORT" = 1 ]; then
    echo
    echo "Smoke mode (SCALE_SHORT=1): small tables, short windows, one round. It proves the"
    echo "harness works end to end; its figures are not for comparison."
  fi
  echo
  "$PY" "$HELPER" report "$RAW"
} > "$RESULTS"
status=$?
cat "$RESULTS"
if [ "$status" != 0 ]; then
  echo "scale: some runs had errors (see $RAW and, with SCALE_KEEP=1, the logs in $TMP)" >&2
  exit 1
fi
exit 0
