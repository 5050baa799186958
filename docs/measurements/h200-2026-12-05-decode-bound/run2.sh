#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp with RPL rows per lane per batch (TURBO_VK_DECODE_RPL 1, 2, 4)
# and other workgroup counts; registers from TURBO_VK_PROFILE=1; the
# conformance test on the H200; SDPA f16 in the same run.
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
for rpl in 1 2 4; do
    echo "== TURBO_VK_DECODE_RPL=$rpl TURBO_VK_PROFILE=1" >> "$O/stats.txt"
    TURBO_VK_DECODE_RPL=$rpl TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 40 ./kvb vulkan turbo3,turbo4,q8_0 4K 1x1,4x1 0 2 2>&1 | grep "decode pipeline" >> "$O/stats.txt"
done
{ echo "== build/tests/test_backends vulkan"; timeout 100 build/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED|ERROR"
  echo "== build/tests/test_paged vulkan"; timeout 30 build/tests/test_paged vulkan 2>&1 | tail -3; } > "$O/conformance.txt" 2>&1
for rpl in 1 2 4; do
    echo "== TURBO_VK_DECODE_RPL=$rpl kvb vulkan turbo3 4K,16K,64K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
    TURBO_VK_DECODE_RPL=$rpl timeout 50 ./kvb vulkan turbo3 4K,16K,64K,128K 1x1,4x1,1x8 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
for wgs in 1584 2112; do
    echo "== TURBO_VK_WORKGROUPS=$wgs kvb vulkan turbo3 16K,128K 1x1 0 8" >> "$O/bench.txt"
    TURBO_VK_WORKGROUPS=$wgs timeout 40 ./kvb vulkan turbo3 16K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
echo "== kvb vulkan turbo4,turbo2,q8_0,f16 4K,16K,128K 1x1 0 8" >> "$O/bench.txt"
timeout 60 ./kvb vulkan turbo4,turbo2,q8_0,f16 4K,16K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072" > "$O/sdpa.txt"
timeout 60 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 >> "$O/sdpa.txt" 2>&1
