#!/bin/bash
# SPDX-License-Identifier: MIT
# What bounds decode.comp on the H200: the compiler's statistics of each
# pipeline (TURBO_VK_PROFILE=1: registers, shared memory), then the shader
# with stages left out (TURBO_VK_SHADER_SKIP) and other workgroup counts
# (TURBO_VK_WORKGROUPS), turbo3, 1 token, the clock raised before each point
# (KVB_WARM_MS=300). Run from the copy of the tree after `. .gpurt/enter.sh`.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export KVB_APPEND=0 KVB_WARM_MS=300 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/bench.txt" 2>&1
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
echo "== TURBO_VK_PROFILE=1 kvb vulkan turbo3,turbo4,turbo2 4K 1x1,4x1 0 2" > "$O/stats.txt"
TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 40 ./kvb vulkan turbo3,turbo4,turbo2 4K 1x1,4x1 0 2 2>&1 | grep "pipeline" >> "$O/stats.txt"
for skip in "" kloads vloads scores values "scores,values" "kloads,vloads" "kloads,vloads,scores,values"; do
    echo "== TURBO_VK_SHADER_SKIP=$skip kvb vulkan turbo3 4K,16K,128K 1x1 0 8" >> "$O/bench.txt"
    TURBO_VK_SHADER_SKIP=$skip timeout 40 ./kvb vulkan turbo3 4K,16K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
for wgs in 132 264 528 1056; do
    echo "== TURBO_VK_WORKGROUPS=$wgs kvb vulkan turbo3 16K,128K 1x1 0 8" >> "$O/bench.txt"
    TURBO_VK_WORKGROUPS=$wgs timeout 40 ./kvb vulkan turbo3 16K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
for v in $(ls -d $R/variants/* 2>/dev/null); do
    echo "== variant $(basename $v): kvb vulkan turbo3 4K,16K,128K 1x1,4x1 0 8" >> "$O/bench.txt"
    TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$v TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 30 ./kvb vulkan turbo3 4K 1x1 0 2 2>&1 | grep "decode pipeline" >> "$O/stats.txt"
    TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$v timeout 40 ./kvb vulkan turbo3 4K,16K,128K 1x1,4x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
    TKV_TEST_VULKAN_PLUGIN=$v/turbokv-vulkan.so TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$v timeout 60 build/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|PASSED|FAILED|ERROR" | tail -4 >> "$O/conformance-$(basename $v).txt"
done
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072" > "$O/sdpa.txt"
timeout 60 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072 >> "$O/sdpa.txt" 2>&1
