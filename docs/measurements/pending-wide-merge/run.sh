#!/bin/bash
# SPDX-License-Identifier: MIT
# decode_wide.comp merging its own chunks (shaders/partials.glsl, this
# build's default) against the merge dispatch (TURBO_VK_MERGE=1, same
# build), on the H200, Llama 3 8B geometry (32 query heads, 8 kv heads,
# head_dim 128), device time per call, the clock raised by 300 ms of the
# same calls before each point (KVB_WARM_MS=300; `turbokv bench --warm-ms
# 300`). Not run yet.
#   gpu.txt          the GPU, its driver and clock
#   conformance.txt  build/tests/test_backends vulkan: default (the H200's
#                    1024 target workgroups: several chunks a unit, merged
#                    by its last workgroup), and the wide shader's unaligned
#                    path with units of 5 query rows (TURBO_VK_WIDE=2
#                    TURBO_VK_DECODE_QT=5); paged, host, summation order
#   stats.txt        the driver compiler's statistics of each pipeline
#                    (registers, shared and local memory), merge inside
#                    (TURBO_VK_MERGE=0) and dispatch (1)
#   stages.txt       stage timestamps (TURBO_VK_PROFILE=1) at 4K and 16K, 1
#                    token: the attention dispatch with the merge inside
#                    against attention + merge dispatch
#   bench.txt        kvb, ABAB (TURBO_VK_MERGE=0, 1, 0, 1): f16, q8_0, q8_0
#                    keys with turbo3 values (k8v3, kvb's K:V pair) and
#                    turbo3 (decode.comp, whose end is now the same include:
#                    against ../h200-2026-12-04-one-pass/ run 2) at 4K,
#                    16K, 128K; 1 token, 4 tokens, 8 sequences
#   bench-tool.txt   `turbokv bench --backend vulkan --warm-ms 300`, f16 and
#                    q8_0 at 4K, 16K, 128K, 1 token, ABAB likewise
#   before.txt       only where variants/before/turbokv-vulkan.so exists (the
#                    plugin built from main before this change, carried with
#                    the tree): kvb with it against this build, 1 token, ABAB
# `run.sh check` writes gpu, conformance, stats and stages (about 4
# minutes), `run.sh time` gpu and the rest (about 5 minutes), `run.sh`
# both: on a lease of at most 10 minutes a command, run the two parts as two
# commands. Run from a copy of the tree (build/ present) after
# `. .gpurt/enter.sh`; output under $OUT.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
PART=${1:-all}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
export TKV_MINIMAL_PLUGIN_DIR=$B/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$B/tests/stubs
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-wide/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
TYPES=f16,q8_0,q8_0:turbo3,turbo3

check() {
    {
        for env in "" "TURBO_VK_WIDE=2 TURBO_VK_DECODE_QT=5"; do
            echo "== build/tests/test_backends vulkan $env"
            timeout 150 $B/tests/test_backends vulkan $env 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
        done
        echo "== build/tests/test_paged vulkan"; timeout 60 $B/tests/test_paged vulkan 2>&1 | tail -2
        echo "== build/tests/test_host_vulkan"; timeout 60 $B/tests/test_host_vulkan 2>&1 | tail -2
        echo "== build/tests/test_sum_order vulkan"; timeout 60 $B/tests/test_sum_order vulkan 2>&1 | tail -2
    } > "$O/conformance.txt" 2>&1

    for merge in 0 1; do
        echo "== TURBO_VK_MERGE=$merge TURBO_VK_PROFILE=1 kvb vulkan $TYPES 4K 1x1,4x1 0 2" >> "$O/stats.txt"
        TURBO_VK_MERGE=$merge TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 60 ./kvb vulkan $TYPES 4K 1x1,4x1 0 2 2>&1 |
            grep "pipeline" >> "$O/stats.txt"
    done

    # (a stderr line per call: the last call's stages, then the point's line)
    for ctx in 4K 16K; do
        for t in f16 q8_0 q8_0:turbo3; do
            for merge in 0 1; do
                echo "== TURBO_VK_MERGE=$merge TURBO_VK_PROFILE=1 kvb vulkan $t $ctx 1x1 0 8" >> "$O/stages.txt"
                TURBO_VK_MERGE=$merge TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan $t $ctx 1x1 0 8 2>&1 |
                    grep -E "^attn|vkprof: attention" | tail -2 >> "$O/stages.txt"
            done
        done
    done
}

time_calls() {
    for round in 1 2; do
        for merge in 0 1; do
            echo "== ($round) TURBO_VK_MERGE=$merge kvb vulkan $TYPES 4K,16K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
            TURBO_VK_MERGE=$merge timeout 150 ./kvb vulkan $TYPES 4K,16K,128K 1x1,4x1,1x8 0 8 2>&1 |
                grep -v '^#' >> "$O/bench.txt"
        done
    done

    for round in 1 2; do
        for merge in 0 1; do
            echo "== ($round) TURBO_VK_MERGE=$merge turbokv bench --backend vulkan --ctx 4K,16K,128K --tokens 1" \
                 "--seqs 1 --warm-ms 300 --types f16,q8_0" >> "$O/bench-tool.txt"
            TURBO_VK_MERGE=$merge timeout 100 $B/tools/turbokv bench --backend vulkan --ctx 4K,16K,128K --tokens 1 \
                --seqs 1 --warm-ms 300 --types f16,q8_0 >> "$O/bench-tool.txt" 2>&1
        done
    done

    if [ -f "$R/variants/before/turbokv-vulkan.so" ]; then
        for round in 1 2; do
            for v in new before; do
                p=$B/plugins/vulkan
                [ $v = before ] && p=$R/variants/before
                echo "== ($round) $v: kvb vulkan $TYPES 4K,16K,128K 1x1 0 8" >> "$O/before.txt"
                TURBO_PLUGIN_PATH=$B/plugins/cpu:$p timeout 100 ./kvb vulkan $TYPES 4K,16K,128K 1x1 0 8 2>&1 |
                    grep -v '^#' >> "$O/before.txt"
            done
        done
    fi
}

case $PART in
check) check ;;
time) time_calls ;;
all) check; time_calls ;;
*) echo "usage: run.sh [check|time|all]" >&2; exit 2 ;;
esac
