#!/bin/sh
# Builds the Debian packages (mc-proxy, libmcproxy0.1, libmcproxy-dev) from this source tree
# and checks them with lintian; `make deb` runs it.
#
# usage: packaging/build-deb.sh [OUTDIR]      (default OUTDIR: build-deb/ in the source tree)
#
# The source is copied (without build output, srv/ or VCS data) into a temporary directory,
# packaging/debian becomes debian/ there, and dpkg-buildpackage -b runs on that copy: the
# checkout itself is never modified. The .debs, .changes and .buildinfo land in OUTDIR, with
# lintian's report in OUTDIR/lintian.txt. Exit status: non-zero when the build fails or lintian
# reports an error or a warning (the overrides in packaging/debian/*.lintian-overrides give the
# reason for each tag they accept). DEB_BUILD_OPTIONS is passed through: nocheck skips the unit
# tests, parallel=N sets the build jobs.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build-deb}
version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
work=$(mktemp -d "${TMPDIR:-/tmp}/mcp-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

tree="$work/mc-proxy-$version"
mkdir "$tree"
(cd "$src" && tar cf - --exclude-vcs --exclude='./build*' --exclude='./obj-*' \
  --exclude=./debian --exclude=./srv --exclude=./fuzz-out --exclude='__pycache__' \
  --exclude='*.pyc' .) | (cd "$tree" && tar xf -)
cp -R "$tree/packaging/debian" "$tree/debian"

# The caller's compiler and make settings must not leak into the package build.
unset MAKEFLAGS MFLAGS CFLAGS CXXFLAGS CPPFLAGS LDFLAGS || true
(cd "$tree" && dpkg-buildpackage -us -uc -b)

mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out"/lintian.txt
mv "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out"/
changes=$(ls "$out"/*.changes)
echo "build-deb.sh: packages in $out:"
ls -1 "$out"/*.deb

if command -v lintian >/dev/null 2>&1; then
  # Every tag, informational ones included, is listed; errors and warnings fail the build.
  status=0
  lintian --info --display-info --tag-display-limit 0 --fail-on error,warning "$changes" \
    >"$out/lintian.txt" 2>&1 || status=$?
  cat "$out/lintian.txt"
  if [ "$status" != 0 ]; then
    echo "build-deb.sh: lintian reported errors or warnings (see $out/lintian.txt)" >&2
    exit 1
  fi
  echo "build-deb.sh: lintian: no errors or warnings"
else
  echo "build-deb.sh: lintian is not installed; packages were not checked" >&2
fi
