#!/bin/bash
# SPDX-License-Identifier: MIT
# Outlier-split values behind a branch on their index (this build's
# default) against the selects in every lane (TURBO_VK_SPLIT_SELECT=1),
# same build, ABAB, turbo3o (auto's type at head_dim 64-128); turbo3 as a
# control; the compiler's statistics; conformance on the H200.
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
for sel in 0 1; do
    echo "== TURBO_VK_SPLIT_SELECT=$sel" >> "$O/stats.txt"
    TURBO_VK_SPLIT_SELECT=$sel TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 40 ./kvb vulkan turbo3o 4K 1x1,4x1 0 2 2>&1 | grep "decode pipeline" >> "$O/stats.txt"
done
{ echo "== build/tests/test_backends vulkan"; timeout 150 $B/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED|ERROR"; } > "$O/conformance.txt" 2>&1
for round in 1 2; do
    for sel in 0 1; do
        echo "== ($round) TURBO_VK_SPLIT_SELECT=$sel kvb vulkan turbo3o,turbo3 4K,16K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
        TURBO_VK_SPLIT_SELECT=$sel timeout 150 ./kvb vulkan turbo3o,turbo3 4K,16K,128K 1x1,4x1,1x8 0 8 2>&1 |
            grep -v '^#' >> "$O/bench.txt"
    done
done
