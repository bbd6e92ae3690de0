#!/bin/sh
# Builds the .deb from a configured and built tree (cpack -G DEB) and checks
# it: the listing (dpkg-deb -c) has the units, sysusers entry, config and
# (when the target exists) the binary; /etc/distilld/distilld.yaml is a
# conffile; Depends names libopenblas0-openmp (and libtorch when the binary is
# in); no maintainer script enables or starts anything.
# Usage: check_deb.sh <build-dir> <binary-expected: yes|no>
set -eu
build=$1
expect_bin=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cd "$build"
cpack -G DEB -B "$out" >"$out/cpack.log" 2>&1 || { cat "$out/cpack.log"; fail "cpack -G DEB"; }
deb=$(ls "$out"/*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no .deb produced"
echo "== $(basename "$deb") ($(du -h "$deb" | cut -f1))"
echo "== dpkg-deb -c"
dpkg-deb -c "$deb" | tee "$out/contents.txt"
echo "== dpkg-deb -I"
dpkg-deb -I "$deb" | tee "$out/info.txt"
dpkg-deb -e "$deb" "$out/control"

has() { grep -Eq "$1" "$out/contents.txt" || fail "missing from package: $1"; }
has ' \./usr/lib/systemd/system/distilld\.service$'
has ' \./usr/lib/systemd/system/distilld\.socket$'
has ' \./usr/lib/sysusers\.d/distilld\.conf$'
has ' \./etc/distilld/distilld\.yaml$'
has ' \./usr/share/doc/distilld/operations-systemd\.md$'
grep -qx '/etc/distilld/distilld.yaml' "$out/control/conffiles" || fail "config is not a conffile"
depends=$(sed -n 's/^ *Depends: //p' "$out/info.txt")
echo "$depends" | grep -q 'libopenblas0-openmp' || fail "Depends lacks libopenblas0-openmp"
if [ "$expect_bin" = yes ]; then
  has ' \./usr/bin/distilld$'
  echo "$depends" | grep -q 'libtorch1\.13' || fail "Depends lacks libtorch1.13"
fi
for s in postinst prerm postrm; do
  [ -x "$out/control/$s" ] || fail "no executable $s"
  sh -n "$out/control/$s" || fail "$s: shell syntax error"
  if grep -v '^ *#' "$out/control/$s" | grep -Eq 'systemctl.*([[:space:]](enable|start|restart)\b|--now)'; then
    fail "$s enables or starts a unit"
  fi
done
echo "OK: package contents, conffiles, Depends and maintainer scripts"
