#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp variants in one run on the H200, the clock raised before each
# point (KVB_WARM_MS=300): 16-byte row loads (default) against 4-byte ones
# (TURBO_VK_DECODE=words) and attention.comp (TURBO_VK_DECODE=0), workgroup
# counts, and the stage timestamps of 4 query tokens. Run from the copy of
# the worktree after `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export KVB_APPEND=0 KVB_WARM_MS=300 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv -lms 100 > "$O/clocks.txt" 2>&1 &
SMI=$!
for v in "TURBO_VK_DECODE=1" "TURBO_VK_DECODE=words" "TURBO_VK_DECODE=0" "TURBO_VK_WORKGROUPS=512" \
         "TURBO_VK_WORKGROUPS=2048"; do
    echo "== $v kvb vulkan turbo3 4K,16K,64K,128K 1x1,4x1 0 8" >> "$O/bench.txt"
    env $v timeout 50 ./kvb vulkan turbo3 4K,16K,64K,128K 1x1,4x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
echo "== TURBO_VK_PROFILE=1 kvb vulkan turbo3 4K,16K 4x1 0 6 (every 50th line of the warm-up)" > "$O/stages.txt"
TURBO_VK_PROFILE=1 timeout 30 ./kvb vulkan turbo3 4K,16K 4x1 0 6 2>&1 | grep -v "buffer of\|type \|heap " \
    | awk '/vkprof: attention/ {n++; if (n % 50 != 0) next} {print}' >> "$O/stages.txt"
kill $SMI
