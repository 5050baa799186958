#!/bin/bash
# SPDX-License-Identifier: MIT
# The merged tree on the H200: conformance (cache bytes, attention, the
# per-token host test, the summation-order test); the per-token step with
# the K/V append pair (ABI 2.5) against the same plugin ignoring it
# (variants/nopair), twice; the merge dispatch without its rotation
# (variants/norot) or its sums over chunks (variants/nosum), wrong outputs,
# for where its 14 us go.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export LD_LIBRARY_PATH=$B/core TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$B/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$B/tests/stubs
NEW=$B/plugins/cpu:$B/plugins/vulkan
{ for t in "test_backends vulkan" "test_paged vulkan" "test_host_vulkan" "test_sum_order vulkan"; do
    echo "== build/tests/$t"; TURBO_PLUGIN_PATH=$NEW timeout 150 $B/tests/$t 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED|ERROR|SKIPPED"
  done; } > "$O/conformance.txt" 2>&1
bench() {
    local name=$1 path=$2 types=$3
    echo "== $name: TURBO_PLUGIN_PATH=$path turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 --warm-ms 300 --types $types" >> "$O/per-token.txt"
    TURBO_PLUGIN_PATH=$path timeout 100 $B/tools/turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 \
        --warm-ms 300 --types $types 2>&1 | grep -v "^bench: " >> "$O/per-token.txt"
}
for round in 1 2; do
    bench "pair ($round)" $NEW turbo3,turbo3o
    bench "nopair ($round)" $B/plugins/cpu:$R/variants/nopair turbo3,turbo3o
done
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
export KVB_APPEND=0 KVB_WARM_MS=300
for v in $B/plugins/vulkan $R/variants/norot $R/variants/nosum; do
    echo "== $v: kvb vulkan turbo3 4K,16K 1x1 0 8" >> "$O/merge.txt"
    TURBO_PLUGIN_PATH=$B/plugins/cpu:$v timeout 40 ./kvb vulkan turbo3 4K,16K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/merge.txt"
done
