#!/bin/sh
# Checks the unit files the way CI does:
#  - systemd-analyze verify on distilld.service and distilld.socket. verify
#    needs ExecStart's binary to exist, so when /usr/bin/distilld is not
#    installed it checks a temporary copy whose ExecStart names /bin/true;
#  - systemd-sysusers on the sysusers.d entry, into a scratch root;
#  - systemd-analyze security --offline=true: prints the table and fails if
#    the overall exposure is above <max> (default 2.0).
# Usage: verify_units.sh <systemd-dir> [max-exposure]
set -eu
src=$(cd "$1" && pwd)
max=${2:-2.0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp "$src/distilld.service" "$src/distilld.socket" "$tmp/"
if [ ! -x /usr/bin/distilld ]; then
  sed -i 's|^ExecStart=/usr/bin/distilld |ExecStart=/bin/true |' "$tmp/distilld.service"
  grep -q '^ExecStart=/bin/true ' "$tmp/distilld.service" || { echo "FAIL: ExecStart not found"; exit 1; }
fi
# verify prints problems on stderr but may still exit 0 for some: fail on any.
systemd-analyze verify "$tmp/distilld.service" "$tmp/distilld.socket" 2>"$tmp/verify.err" || {
  cat "$tmp/verify.err"; echo "FAIL: systemd-analyze verify"; exit 1; }
if [ -s "$tmp/verify.err" ]; then cat "$tmp/verify.err"; echo "FAIL: verify warnings"; exit 1; fi
echo "systemd-analyze verify: OK"

mkdir -p "$tmp/root/etc"
systemd-sysusers --root="$tmp/root" "$src/distilld.sysusers" >/dev/null 2>&1
grep -q '^distilld:x:[0-9]*:[0-9]*:.*:/var/lib/distilld:/usr/sbin/nologin$' "$tmp/root/etc/passwd" || {
  echo "FAIL: sysusers entry did not create the distilld user"; exit 1; }
echo "systemd-sysusers: creates user distilld"

systemd-analyze security --offline=true --no-pager "$src/distilld.service" >"$tmp/security.txt" 2>&1 || true
cat "$tmp/security.txt"
level=$(sed -n 's/.*Overall exposure level for distilld.service: \([0-9.]*\).*/\1/p' "$tmp/security.txt")
[ -n "$level" ] || { echo "FAIL: no exposure level"; exit 1; }
if awk -v l="$level" -v m="$max" 'BEGIN { exit !(l <= m) }'; then
  echo "exposure $level <= $max: OK"
else
  echo "FAIL: exposure $level > $max"; exit 1
fi
