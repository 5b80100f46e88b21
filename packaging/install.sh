#!/bin/sh
# Installs mc-proxy from a build tree on a systemd host, without a Debian package:
#   - the system user and group mc-proxy (no login shell, home /srv/mc-proxy);
#   - /srv/mc-proxy (0750, owned by mc-proxy) and /srv/mc-proxy/backups;
#   - the binary as /usr/bin/mc-proxy (the path the unit runs);
#   - mc-proxy.service, mc-proxy-snapshot.service and .timer in /etc/systemd/system;
#   - the man pages under /usr/local/share/man, and the admin API's admin.proto (for gRPC clients
#     in other languages) as /usr/local/share/mc-proxy/admin.proto;
#   - the example config as /srv/mc-proxy/mc-proxy.ini, only if no config is there yet: an
#     existing config is never overwritten (the new example goes to mc-proxy.ini.example).
# Running it again is safe: every step checks before it changes anything. It enables nothing
# and starts nothing; it prints the commands for that. Do not mix it with the .deb.
#
# usage: packaging/install.sh [--binary PATH] [--root DIR] [--no-user]
#   --binary PATH  the mc-proxy to install (default: build/cli/mc-proxy in the source tree)
#   --root DIR     install under DIR instead of / (for staging and tests); implies that no
#                  systemctl is run
#   --no-user      do not create the user; files stay owned by the caller (tests, staging)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
binary="$src/build/cli/mc-proxy"
root=""
make_user=1

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || { echo "install.sh: --binary needs a path" >&2; exit 2; }
              binary=$2; shift 2 ;;
    --root)   [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
              root=${2%/}; shift 2 ;;
    --no-user) make_user=0; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

[ -x "$binary" ] || { echo "install.sh: no executable at $binary (build first: make mc-proxy)" >&2; exit 1; }
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or use --root DIR to stage elsewhere)" >&2
  exit 1
fi

state="$root/srv/mc-proxy"
say() { printf 'install.sh: %s\n' "$*"; }

# 1. The user. --system gives a UID below 1000, no aging; the home is the state directory.
owner=""
if [ "$make_user" = 1 ]; then
  if getent passwd mc-proxy >/dev/null 2>&1; then
    say "user mc-proxy exists"
  else
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    useradd --system --user-group --home-dir /srv/mc-proxy --no-create-home \
      --shell "$nologin" --comment "mc-proxy TLS SNI proxy" mc-proxy
    say "created user mc-proxy"
  fi
  owner=mc-proxy:mc-proxy
fi

# 2. Directories. The state directory is the only one the service may write.
install -d -m 0755 "$root/usr/bin" "$root/etc/systemd/system" \
  "$root/usr/local/share/man/man1" "$root/usr/local/share/man/man5" \
  "$root/usr/local/share/mc-proxy"
install -d -m 0750 "$state" "$state/backups"
if [ -n "$owner" ]; then
  chown "$owner" "$state" "$state/backups"
fi

# 3. Binary, units, man pages: replaced on every run (that is an upgrade).
install -m 0755 "$binary" "$root/usr/bin/mc-proxy.new"
mv -f "$root/usr/bin/mc-proxy.new" "$root/usr/bin/mc-proxy"
for unit in mc-proxy.service mc-proxy-snapshot.service mc-proxy-snapshot.timer; do
  install -m 0644 "$here/$unit" "$root/etc/systemd/system/$unit"
done
install -m 0644 "$src/docs/man/mc-proxy.1" "$root/usr/local/share/man/man1/mc-proxy.1"
install -m 0644 "$src/docs/man/mc-proxy.ini.5" "$root/usr/local/share/man/man5/mc-proxy.ini.5"
install -m 0644 "$src/proto/mc_proxy/v1/admin.proto" "$root/usr/local/share/mc-proxy/admin.proto"
say "installed /usr/bin/mc-proxy, units, man pages and admin.proto"

# 4. The config: never overwrite one that exists. Root owns it; the service only reads it.
if [ -e "$state/mc-proxy.ini" ]; then
  install -m 0640 "$src/examples/mc-proxy.ini" "$state/mc-proxy.ini.example"
  say "kept the existing $state/mc-proxy.ini (the new example is mc-proxy.ini.example)"
else
  install -m 0640 "$src/examples/mc-proxy.ini" "$state/mc-proxy.ini"
  say "wrote the example config $state/mc-proxy.ini: edit it, then 'mc-proxy check -c' it"
fi
if [ -n "$owner" ]; then
  chown root:mc-proxy "$state/mc-proxy.ini"
  [ ! -e "$state/mc-proxy.ini.example" ] || chown root:mc-proxy "$state/mc-proxy.ini.example"
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  say "next: systemctl enable --now mc-proxy.service mc-proxy-snapshot.timer"
else
  say "systemd is not running here (or --root was given): no systemctl was run"
fi
