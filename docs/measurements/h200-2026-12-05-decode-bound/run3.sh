#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp (1 row per lane): the driver's machine code where it gives it
# (TURBO_VK_PROFILE_DIR), more workgroups, and the batch skeleton's parts
# (subgroup barriers, the block table) left out. turbo3, 1 token.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O/ir"
export KVB_APPEND=0 KVB_WARM_MS=300 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/bench.txt" 2>&1
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
TURBO_VK_PROFILE=1 TURBO_VK_PROFILE_DIR=$O/ir KVB_WARM_MS=0 timeout 40 ./kvb vulkan turbo3 4K 1x1 0 2 2>&1 | grep "pipeline" > "$O/stats.txt"
ls -la $O/ir >> "$O/stats.txt"
for wgs in 1024 1584 2112 3168 4224; do
    echo "== TURBO_VK_WORKGROUPS=$wgs kvb vulkan turbo3 16K,128K 1x1 0 8" >> "$O/bench.txt"
    TURBO_VK_WORKGROUPS=$wgs timeout 40 ./kvb vulkan turbo3 16K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
for skip in "kloads,vloads,scores,values" "kloads,vloads,scores,values,sync" "kloads,vloads,scores,values,blocks" \
            "kloads,vloads,scores,values,sync,blocks" sync blocks "sync,blocks" "scores,values"; do
    echo "== TURBO_VK_SHADER_SKIP=$skip kvb vulkan turbo3 128K 1x1 0 8" >> "$O/bench.txt"
    TURBO_VK_SHADER_SKIP=$skip timeout 40 ./kvb vulkan turbo3 128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
