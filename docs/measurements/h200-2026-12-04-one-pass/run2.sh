#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp with its loads ahead of the first wait and its own merge
# (this build), the same build with the merge dispatch (TURBO_VK_MERGE=1),
# and main before this work (variants/before), ABAB; stage timestamps; the
# conformance tests on the H200.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
export TKV_MINIMAL_PLUGIN_DIR=$B/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$B/tests/stubs
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/bench.txt" 2>&1
{ echo "== build/tests/test_backends vulkan"; timeout 150 $B/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED|ERROR"
  echo "== build/tests/test_paged vulkan"; timeout 60 $B/tests/test_paged vulkan 2>&1 | tail -3
  echo "== build/tests/test_host_vulkan"; timeout 60 $B/tests/test_host_vulkan 2>&1 | tail -3
  echo "== build/tests/test_sum_order vulkan"; timeout 60 $B/tests/test_sum_order vulkan 2>&1 | tail -3; } > "$O/conformance.txt" 2>&1
TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 40 ./kvb vulkan turbo3,turbo3o 4K 1x1,4x1 0 2 2>&1 | grep "decode pipeline" > "$O/stats.txt"
for ctx in 4K 16K; do
    for v in new merge before; do
        p=$B/plugins/vulkan; m=0
        [ $v = merge ] && m=1
        [ $v = before ] && p=$R/variants/before
        echo "== $v: TURBO_VK_MERGE=$m TURBO_VK_PROFILE=1 kvb vulkan turbo3 $ctx 1x1 0 8" >> "$O/stages.txt"
        TURBO_PLUGIN_PATH=$B/plugins/cpu:$p TURBO_VK_MERGE=$m TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3 $ctx 1x1 0 8 2>&1 |
            grep -E "^[^#]|vkprof: attention" | tail -2 >> "$O/stages.txt"
    done
done
for round in 1 2; do
    for v in new merge before; do
        p=$B/plugins/vulkan; m=0
        [ $v = merge ] && m=1
        [ $v = before ] && p=$R/variants/before
        echo "== ($round) $v: TURBO_VK_MERGE=$m kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
        TURBO_PLUGIN_PATH=$B/plugins/cpu:$p TURBO_VK_MERGE=$m timeout 120 ./kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1,4x1,1x8 0 8 2>&1 |
            grep -v '^#' >> "$O/bench.txt"
    done
done
