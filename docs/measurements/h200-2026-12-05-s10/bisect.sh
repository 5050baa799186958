#!/bin/bash
# SPDX-License-Identifier: MIT
# decode_wide.comp (f16, q8_0 keys) was slower in run.sh's output than in
# session 8's final run: the vulkan plugin built at the commits between
# (variants/COMMIT/turbokv-vulkan.so, built elsewhere from those commits)
# against this tree's, f16 and q8_0 at 16K and 128K, twice in alternating
# order; then the compiler's statistics of the oldest and this build.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-wide/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
V="5e2ea3c 3106e1f 887303c 9966bb2 cb047d2 head"
for round in 1 2; do
    [ $round = 2 ] && V=$(echo $V | tr ' ' '\n' | tac | tr '\n' ' ')
    for v in $V; do
        p=$R/variants/$v
        [ $v = head ] && p=$B/plugins/vulkan
        echo "== ($round) $v: kvb vulkan f16,q8_0 16K,128K 1x1 0 8" >> "$O/bisect.txt"
        TURBO_PLUGIN_PATH=$B/plugins/cpu:$p timeout 60 ./kvb vulkan f16,q8_0 16K,128K 1x1 0 8 2>&1 |
            grep -v '^#' >> "$O/bisect.txt"
    done
done
for v in 5e2ea3c head; do
    p=$R/variants/$v
    [ $v = head ] && p=$B/plugins/vulkan
    echo "== $v" >> "$O/stats.txt"
    TURBO_PLUGIN_PATH=$B/plugins/cpu:$p TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 60 ./kvb vulkan f16,q8_0,turbo3 4K 1x1 0 2 2>&1 |
        grep "pipeline" >> "$O/stats.txt"
done
# then the subnormal rules of turbokv_scalar.h on NVIDIA's Vulkan driver
# (it flushes fp32 subnormals and reports no DenormPreserve): the scalar
# rules and the conformance of both plugins with this build
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl
{
    for b in vulkan opencl cpu; do
        echo "== build/tests/test_scalar $b"
        timeout 100 $B/tests/test_scalar $b 2>&1 | grep -vE "^\[ (RUN|     OK) "
    done
    echo "== build/tests/test_backends vulkan"
    timeout 150 $B/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
    echo "== build/tests/test_sum_order vulkan"; timeout 60 $B/tests/test_sum_order vulkan 2>&1 | tail -2
} > "$O/subnormals.txt" 2>&1
