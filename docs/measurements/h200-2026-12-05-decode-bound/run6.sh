#!/bin/bash
# SPDX-License-Identifier: MIT
# The outlier-split types (turbo3o: auto's K and V at head_dim 64-128) on
# decode.comp against attention.comp (TURBO_VK_DECODE=0), turbo3 beside
# them (the outliers of values summed in shared memory); the conformance tests on the H200; SDPA f16 in the same run.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export KVB_APPEND=0 KVB_WARM_MS=300 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/bench.txt" 2>&1
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 40 ./kvb vulkan turbo3o 4K 1x1,4x1 0 2 2>&1 | grep "decode pipeline" > "$O/stats.txt"
{ echo "== build/tests/test_backends vulkan"; timeout 150 build/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED|ERROR"
  echo "== build/tests/test_paged vulkan"; timeout 60 build/tests/test_paged vulkan 2>&1 | tail -3; } > "$O/conformance.txt" 2>&1
for dec in 1 0; do
    echo "== TURBO_VK_DECODE=$dec kvb vulkan turbo3o 4K,16K,64K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
    TURBO_VK_DECODE=$dec timeout 60 ./kvb vulkan turbo3o 4K,16K,64K,128K 1x1,4x1,1x8 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
echo "== kvb vulkan turbo3 4K,16K,64K,128K 1x1 0 8" >> "$O/bench.txt"
timeout 40 ./kvb vulkan turbo3 4K,16K,64K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
