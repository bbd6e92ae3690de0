#!/bin/sh
# Keeps systemd/distilld.service honest about MemoryDenyWriteExecute=:
# the unit may set it to yes only if LibTorch works under the equivalent
# seccomp filter (see mdwe_probe.cc). Also re-checks the documented finding
# that turning oneDNN off is enough to make LibTorch work under it.
# Usage: check_mdwe.sh <mdwe_probe> <distilld.service>
set -u
probe=$1
unit=$2

"$probe" --no-filter || { echo "FAIL: LibTorch fails even without the filter"; exit 1; }

"$probe"
rc=$?
if grep -q '^MemoryDenyWriteExecute=yes' "$unit"; then unit_mdwe=yes; else unit_mdwe=no; fi
case $rc in
  0) [ "$unit_mdwe" = yes ] || { echo "FAIL: LibTorch works under MDWE but the unit does not set MemoryDenyWriteExecute=yes"; exit 1; } ;;
  1) [ "$unit_mdwe" = no ] || { echo "FAIL: the unit sets MemoryDenyWriteExecute=yes but LibTorch fails under it"; exit 1; } ;;
  *) echo "FAIL: the probe could not install or verify the filter (rc=$rc)"; exit 1 ;;
esac
echo "unit MemoryDenyWriteExecute=$unit_mdwe matches the probe (rc=$rc)"

"$probe" --no-mkldnn || { echo "FAIL: docs/operations-systemd.md says LibTorch works under MDWE with oneDNN off; it no longer does"; exit 1; }
exit 0
