#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp against attention.comp (TURBO_VK_DECODE=0) on the H200 with the
# clock raised before each point (KVB_WARM_MS=300: 300 ms of the same calls
# back to back, kvb.c), PyTorch SDPA f16 in the same run. Run from the copy
# of the worktree after `. .gpurt/enter.sh`; writes into $OUT:
#   bench.txt   kvb vulkan, decode then attention, per type
#   stages.txt  TURBO_VK_PROFILE=1 (attention and merge dispatches apart)
#   sdpa.txt, conformance.txt, clocks.txt (every 100 ms)
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
T0=$(date +%s)
left() { echo $(( ${BUDGET:-250} - ($(date +%s) - T0) )); }
export KVB_APPEND=0 KVB_WARM_MS=300 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
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
for spec in "turbo3 1x1,4x1,1x8" "turbo4 1x1" "q8_0 1x1" "turbo2 1x1"; do
    set -- $spec
    for dec in 1 0; do
        [ "$(left)" -lt 50 ] && { echo "== (budget) skipped $1 $dec" >> "$O/bench.txt"; continue; }
        echo "== TURBO_VK_DECODE=$dec kvb vulkan $1 4K,16K,64K,128K $2 0 8" >> "$O/bench.txt"
        TURBO_VK_DECODE=$dec timeout 60 ./kvb vulkan $1 4K,16K,64K,128K $2 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
    done
done
echo "== TURBO_VK_PROFILE=1 kvb vulkan turbo3 4K,16K,128K 1x1 0 6" > "$O/stages.txt"
TURBO_VK_PROFILE=1 timeout 40 ./kvb vulkan turbo3 4K,16K,128K 1x1 0 6 2>&1 | grep -v "buffer of\|type \|heap " \
    | awk '/vkprof: attention/ {n++; if (n % 8 != 0) next} {print}' >> "$O/stages.txt"
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072" > "$O/sdpa.txt"
timeout 60 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 >> "$O/sdpa.txt" 2>&1
kill $SMI
