#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp merging its own chunks (this build's default) against the
# merge dispatch (TURBO_VK_MERGE=1, same build), ABAB; turbo3 and turbo3o;
# stage timestamps at 4K; the conformance tests on the H200.
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
  echo "== build/tests/test_host_vulkan"; timeout 60 $B/tests/test_host_vulkan 2>&1 | tail -3; } > "$O/conformance.txt" 2>&1
for ctx in 4K 16K; do
    for merge in 0 1; do
        echo "== TURBO_VK_MERGE=$merge TURBO_VK_PROFILE=1 kvb vulkan turbo3 $ctx 1x1 0 8" >> "$O/stages.txt"
        TURBO_VK_MERGE=$merge TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3 $ctx 1x1 0 8 2>&1 |
            grep -E "^[^#]|vkprof: attention" | tail -3 >> "$O/stages.txt"
    done
done
for round in 1 2; do
    for merge in 0 1; do
        echo "== ($round) TURBO_VK_MERGE=$merge kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
        TURBO_VK_MERGE=$merge timeout 120 ./kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1,4x1,1x8 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
    done
done
# more workgroups with the merge inside (decode.comp takes a quarter of the target)
for wgs in 1024 1584 2112; do
    echo "== TURBO_VK_WORKGROUPS=$wgs kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1 0 8" >> "$O/workgroups.txt"
    TURBO_VK_WORKGROUPS=$wgs timeout 60 ./kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/workgroups.txt"
done
