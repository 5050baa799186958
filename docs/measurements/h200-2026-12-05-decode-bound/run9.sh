#!/bin/bash
# SPDX-License-Identifier: MIT
# merge.comp's chunk sums without a branch between their loads (this build)
# against the build before (variants/before), ABAB; turbo3 and turbo3o.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
for round in 1 2; do
    for v in $B/plugins/vulkan $R/variants/before; do
        echo "== ($round) $v: kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1,4x1,1x8 0 8" >> "$O/merge.txt"
        TURBO_PLUGIN_PATH=$B/plugins/cpu:$v timeout 60 ./kvb vulkan turbo3,turbo3o 4K,16K,128K 1x1,4x1,1x8 0 8 2>&1 | grep -v '^#' >> "$O/merge.txt"
    done
done
echo "== build/tests/test_backends vulkan" > "$O/conformance.txt"
TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan timeout 150 $B/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|PASSED|FAILED|ERROR" >> "$O/conformance.txt"
