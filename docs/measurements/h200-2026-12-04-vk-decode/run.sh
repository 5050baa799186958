#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp (subgroup per chunk) against attention.comp (TURBO_VK_DECODE=0)
# on the H200, in short processes (the clock falls from 1980 to 345 MHz a few
# seconds into a light load; clocks.txt shows it every 100 ms; the
# TURBO_VK_REPEAT=20 runs of 1-first/ and 2-staged/ were taken while it
# fell and are not comparable). Run from
# the copy of the worktree after `. .gpurt/enter.sh`; writes into $OUT:
#   bench.txt      kvb (../h200-2026-12-04-gpu-vulkan/kvb.c), decode then attention, per type
#   stages.txt     TURBO_VK_PROFILE=1: attention and merge dispatches apart
#   sweep.txt      TURBO_VK_WORKGROUPS and TURBO_VK_MIN_CHUNK for turbo3
#   sdpa.txt       scripts/sdpa-baseline.py; conformance.txt; clocks.txt
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
T0=$(date +%s)
left() { echo $(( ${BUDGET:-250} - ($(date +%s) - T0) )); }
export KVB_APPEND=0 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/bench.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv -lms 100 > "$O/clocks.txt" 2>&1 &
SMI=$!
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
{
echo "== build/tests/test_backends vulkan"; timeout 60 build/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED|ERROR"
echo "== build/tests/test_paged vulkan"; timeout 30 build/tests/test_paged vulkan 2>&1 | tail -3
} > "$O/conformance.txt" 2>&1
cat "$O/conformance.txt"
for t in ${TYPES:-turbo3 turbo4 q8_0 turbo2}; do
    for dec in 1 0; do
        [ "$(left)" -lt 60 ] && { echo "== (budget) skipped $t $dec" >> "$O/bench.txt"; continue; }
        echo "== TURBO_VK_DECODE=$dec kvb vulkan $t 4K,16K,64K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
        TURBO_VK_DECODE=$dec timeout 60 ./kvb vulkan $t 4K,16K,64K,128K 1x1,4x1,1x8 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
    done
done
cat "$O/bench.txt"
echo "== TURBO_VK_PROFILE=1 kvb vulkan turbo3 4K,16K,128K 1x1 0 6" > "$O/stages.txt"
TURBO_VK_PROFILE=1 timeout 40 ./kvb vulkan turbo3 4K,16K,128K 1x1 0 6 2>&1 | grep -v "buffer of\|type \|heap " >> "$O/stages.txt"
for v in "TURBO_VK_WORKGROUPS=128" "TURBO_VK_WORKGROUPS=256" "TURBO_VK_WORKGROUPS=512" \
         "TURBO_VK_WORKGROUPS=2048" "TURBO_VK_MIN_CHUNK=256"; do
    [ "$(left)" -lt 30 ] && { echo "== (budget) skipped: $v" >> "$O/sweep.txt"; continue; }
    echo "== $v kvb vulkan turbo3 4K,16K,128K 1x1 0 6" >> "$O/sweep.txt"
    env $v TURBO_VK_PROFILE=1 timeout 30 ./kvb vulkan turbo3 4K,16K,128K 1x1 0 6 2>&1 | grep -v '^#\|buffer of\|type \|heap \|skip 0x' | awk '/vkprof/ {n++; if (n % 6 != 0) next} {print}' >> "$O/sweep.txt"
done
cat "$O/sweep.txt"
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072" > "$O/sdpa.txt"
timeout 60 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 >> "$O/sdpa.txt" 2>&1
cat "$O/sdpa.txt"
kill $SMI
