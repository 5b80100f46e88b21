#!/usr/bin/env bash
# Cluster mode at scale (issue 13; the figures are in docs/SCALING.md): CS_ROUTES (100,000)
# routes imported into a one-member etcd with `mc-proxy cluster import`, two instances with
# [cluster] started on fresh databases (start to "applied", RSS, restart time), then CS_RATE
# (100) route puts per second for CS_SECS (30) seconds and each put's latency to "applied" on
# both instances (p50, p99, max). The work is done by bench/cluster_scale.py (see its header
# for the method); this checks the parts and runs it.
#
# usage: bench/cluster_scale.sh BUILD_DIR
#
# Environment (all optional):
#   CS_ROUTES=N   routes in etcd (default 100000)
#   CS_RATE=N     puts per second during the load (default 100)
#   CS_SECS=S     length of the load (default 30)
#   CS_OUT=DIR    where cluster-scale-results.md goes (default BUILD_DIR)
#   CS_KEEP=1     keep the temporary directory (configs, databases, logs, etcd's data)
#
# Instance B runs in a network namespace of its own (root and ip(8) needed; without them only A
# is measured). Needs /usr/bin/etcd (Debian etcd-server) and python3-grpcio.
# Exit status: 0 done; 1 a step failed (the files are kept and named); 2 usage or setup errors.
set -u

BUILD=${1:-}
if [ -z "$BUILD" ] || [ ! -d "$BUILD" ]; then
  echo "usage: bench/cluster_scale.sh BUILD_DIR" >&2
  exit 2
fi
SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$BUILD/cli/mc-proxy" ]; then
  echo "cluster_scale: $BUILD/cli/mc-proxy is not built (make build)" >&2
  exit 2
fi
if [ ! -x /usr/bin/etcd ]; then
  echo "cluster_scale: /usr/bin/etcd is missing (Debian etcd-server; make deps)" >&2
  exit 2
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" "$SRC/bench/cluster_scale.py" "$BUILD"
