#!/bin/bash
# SPDX-License-Identifier: MIT
# Where decode's fixed cost at 4K goes: the merge dispatch left out
# (TURBO_VK_SKIP=merge), the attention grid with every workgroup leaving at
# once (empty), both; stage timestamps (TURBO_VK_PROFILE=1). turbo3, 1 token.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export KVB_APPEND=0 KVB_WARM_MS=300 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/bench.txt" 2>&1
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
for skip in "" merge empty "empty,merge" "kloads,vloads,scores,values"; do
    case $skip in kloads*) var=TURBO_VK_SHADER_SKIP ;; *) var=TURBO_VK_SKIP ;; esac
    echo "== $var=$skip kvb vulkan turbo3 4K,16K 1x1 0 8" >> "$O/bench.txt"
    env $var=$skip timeout 40 ./kvb vulkan turbo3 4K,16K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
echo "== TURBO_VK_PROFILE=1 kvb vulkan turbo3 4K 1x1 0 8" > "$O/stages.txt"
TURBO_VK_PROFILE=1 timeout 40 ./kvb vulkan turbo3 4K 1x1 0 8 2>&1 | grep "vkprof: attention" | tail -5 >> "$O/stages.txt"
# pair tables + prescaled weights (this build) against the build before them
# (variants/before: decode.comp at d532045), same run
for v in "$R/build/plugins/vulkan" "$R/variants/before"; do
    echo "== plugin $v: kvb vulkan turbo3,turbo3o,turbo2,turbo4 4K,16K,64K,128K 1x1 0 8" >> "$O/ab.txt"
    TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$v timeout 80 ./kvb vulkan turbo3,turbo3o,turbo2,turbo4 4K,16K,64K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/ab.txt"
    echo "== plugin $v: kvb vulkan turbo3 4K,16K,128K 4x1,1x8 0 8" >> "$O/ab.txt"
    TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$v timeout 60 ./kvb vulkan turbo3 4K,16K,128K 4x1,1x8 0 8 2>&1 | grep -v '^#' >> "$O/ab.txt"
done
TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 40 ./kvb vulkan turbo3,turbo3o 4K 1x1,4x1 0 2 2>&1 | grep "decode pipeline" > "$O/stats.txt"
{ echo "== build/tests/test_backends vulkan"; timeout 150 build/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED|ERROR"
  echo "== build/tests/test_paged vulkan"; timeout 60 build/tests/test_paged vulkan 2>&1 | tail -3; } > "$O/conformance.txt" 2>&1
