#!/bin/sh
# Long crash run: SIGKILL the ingesting helper many times and verify the store
# and the replay buffer after each kill (see tests/storage/crash_test.cc).
#   bench/storage/crash_stress.sh <build dir> [cycles=500] [seed=1]
set -eu
build=${1:?usage: crash_stress.sh <build dir> [cycles] [seed]}
DISTILLD_CRASH_CYCLES=${2:-500} DISTILLD_CRASH_SEED=${3:-1} \
  exec "$build/tests/storage/storage_crash_test" --force-colors=0 --success=0
