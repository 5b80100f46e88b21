# Sourced by bench/run.sh for BENCH_MODES=netns: three network namespaces of its own (client,
# proxy, backend) joined by two veth pairs with MTU 1500, so the traffic crosses something that
# looks like a network (1500-byte packets, optional netem delay) instead of loopback. Everything
# is created here and removed by netns_down (run.sh calls it from its exit trap, after stopping
# the processes). The addresses exist only inside these namespaces, which have no link to the
# host's own network: nothing here touches any other address or interface, and no packet of the
# bench leaves the machine.
#
#   client ns  ${NETNS_ID}c0  10.200.1.1/24  <-veth->  10.200.1.2/24  ${NETNS_ID}p0  proxy ns
#   proxy ns   ${NETNS_ID}p1  10.200.2.1/24  <-veth->  10.200.2.2/24  ${NETNS_ID}b0  backend ns
#
# The proxy namespace forwards between its two links (ip_forward=1 there only), so the "direct"
# target reaches the backend through a kernel router instead of a proxy. Root is required.

NETNS_ID=mcpb$$
NETNS_C=${NETNS_ID}c
NETNS_P=${NETNS_ID}p
NETNS_B=${NETNS_ID}b
NETNS_CREATED=()
NETNS_CLIENT_IP=10.200.1.1
NETNS_PROXY_IP=10.200.1.2
NETNS_BACKEND_IP=10.200.2.2

# Writes a sysctl inside one of our namespaces (these net.* settings are per namespace).
netns_sysctl() { # ns key value
  ip netns exec "$1" sh -c "echo '$3' > /proc/sys/$(echo "$2" | tr . /)"
}

netns_up() { # netem_delay_ms (0: none) gso (off: one 1500-byte packet per skb; on: defaults)
  local delay=$1 gso=${2:-off} ns dev
  if [ "$(id -u)" != 0 ] || ! command -v ip > /dev/null; then
    echo "netns mode needs root and ip(8) (Debian package iproute2)"
    return 1
  fi
  for ns in "$NETNS_C" "$NETNS_P" "$NETNS_B"; do
    ip netns add "$ns" || { echo "ip netns add $ns failed"; return 1; }
    NETNS_CREATED+=("$ns")
    ip -n "$ns" link set lo up || return 1
  done
  ip link add "${NETNS_ID}c0" netns "$NETNS_C" type veth peer name "${NETNS_ID}p0" \
    netns "$NETNS_P" || { echo "veth client-proxy failed"; return 1; }
  ip link add "${NETNS_ID}p1" netns "$NETNS_P" type veth peer name "${NETNS_ID}b0" \
    netns "$NETNS_B" || { echo "veth proxy-backend failed"; return 1; }
  ip -n "$NETNS_C" addr add "$NETNS_CLIENT_IP/24" dev "${NETNS_ID}c0" &&
    ip -n "$NETNS_P" addr add "$NETNS_PROXY_IP/24" dev "${NETNS_ID}p0" &&
    ip -n "$NETNS_P" addr add 10.200.2.1/24 dev "${NETNS_ID}p1" &&
    ip -n "$NETNS_B" addr add "$NETNS_BACKEND_IP/24" dev "${NETNS_ID}b0" || return 1
  for dev in "$NETNS_C:${NETNS_ID}c0" "$NETNS_P:${NETNS_ID}p0" "$NETNS_P:${NETNS_ID}p1" \
    "$NETNS_B:${NETNS_ID}b0"; do
    ip -n "${dev%%:*}" link set "${dev#*:}" mtu 1500 up || return 1
    # veth passes GSO super-packets of up to 64 KiB unsplit, which would hide the per-packet
    # cost again; one segment per packet makes every 1500-byte packet cross the stack on its own
    # (veth has no GRO by default, so the receiving side sees them one by one as well).
    if [ "$gso" = off ]; then
      ip -n "${dev%%:*}" link set "${dev#*:}" gso_max_segs 1 || return 1
    fi
  done
  ip -n "$NETNS_C" route add 10.200.2.0/24 via "$NETNS_PROXY_IP" &&
    ip -n "$NETNS_B" route add 10.200.1.0/24 via 10.200.2.1 || return 1
  netns_sysctl "$NETNS_P" net.ipv4.ip_forward 1 || return 1
  # A FIN close leaves TIME_WAIT sockets on the side that closes first (the client, and the
  # proxy towards the backend): let those two namespaces reuse them and use the whole port range,
  # as a busy proxy host would be tuned. Only these namespaces' own settings change.
  for ns in "$NETNS_C" "$NETNS_P"; do
    netns_sysctl "$ns" net.ipv4.tcp_tw_reuse 1 &&
      netns_sysctl "$ns" net.ipv4.ip_local_port_range "1024 65535" || return 1
  done
  if [ "${delay:-0}" != 0 ]; then
    # netem on every veth end delays each direction of each link by $delay ms.
    for dev in "$NETNS_C:${NETNS_ID}c0" "$NETNS_P:${NETNS_ID}p0" "$NETNS_P:${NETNS_ID}p1" \
      "$NETNS_B:${NETNS_ID}b0"; do
      if ! ip netns exec "${dev%%:*}" tc qdisc add dev "${dev#*:}" root netem \
        delay "${delay}ms" limit 100000 2> /dev/null; then
        echo "tc netem is not available on this kernel (sch_netem missing); run without BENCH_NETEM_MS"
        return 1
      fi
    done
  fi
  return 0
}

# Deletes the namespaces this script created (their veths go with them). Idempotent. By name
# rather than from NETNS_CREATED alone, in case netns_up ran in a subshell: the names carry this
# script's PID, so they are ours.
netns_down() {
  local ns
  for ns in "$NETNS_C" "$NETNS_P" "$NETNS_B"; do
    if [ -e "/run/netns/$ns" ]; then
      ip netns del "$ns" 2> /dev/null || echo "$(basename "$0"): could not delete netns $ns" >&2
    fi
  done
  NETNS_CREATED=()
}
