#!/bin/bash
# SPDX-License-Identifier: MIT
# One H200 run of the tree after session 9's Vulkan changes (SPIR-V 1.5
# shaders, decode_wide.comp merging its own chunks, DenormPreserve variants
# of quantize / rows), in order of what matters if the lease ends early:
#   conformance.txt  vulkan: test_scalar (TURBO_VK_DENORM auto, and off for
#                    the two subnormal cases it fixes), test_backends (the
#                    default, decode_wide.comp's unaligned path, the merge
#                    dispatch), test_paged, test_host_vulkan, test_sum_order;
#                    opencl: test_backends
#   info.txt         `turbokv info`'s vulkan driver line per TURBO_VK_DENORM
#   bench-vulkan.txt `turbokv bench --backend vulkan --warm-ms 300`, the
#                    README's GPU table
#   sdpa.txt         PyTorch f16 SDPA in the same run
#   merge.txt        f16, q8_0 and k8v3 on decode_wide.comp: the merge inside
#                    (default) against TURBO_VK_MERGE=1, ABAB
#   per-token.txt    `turbokv bench --per-token`, 4K and 128K, turbo3
#   denorm.txt       per-token appends with TURBO_VK_DENORM=auto against off
#   stats.txt        the driver compiler's statistics of the pipelines
# From a copy of the tree (build/ present) after `. .gpurt/enter.sh`;
# output under $OUT. About 8 minutes.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
export TKV_MINIMAL_PLUGIN_DIR=$B/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$B/tests/stubs
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-wide/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
for d in auto off; do
    echo "== TURBO_VK_DENORM=$d turbokv info" >> "$O/info.txt"
    TURBO_VK_DENORM=$d $B/tools/turbokv info 2>&1 | grep -A3 "^  vulkan" >> "$O/info.txt"
done
{
    step scalar
    for d in auto off; do
        echo "== TURBO_VK_DENORM=$d build/tests/test_scalar vulkan"
        TURBO_VK_DENORM=$d timeout 100 $B/tests/test_scalar vulkan 2>&1 | grep -vE "^\[ (RUN|     OK) "
        echo "rc ${PIPESTATUS[0]}"
    done
    step backends
    for env in "" "TURBO_VK_WIDE=2 TURBO_VK_DECODE_QT=5" "TURBO_VK_MERGE=1"; do
        echo "== build/tests/test_backends vulkan $env"
        timeout 150 $B/tests/test_backends vulkan $env 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
    done
    step paged
    echo "== build/tests/test_paged vulkan"; timeout 60 $B/tests/test_paged vulkan 2>&1 | tail -2
    echo "== build/tests/test_host_vulkan"; timeout 60 $B/tests/test_host_vulkan 2>&1 | tail -2
    echo "== build/tests/test_sum_order vulkan"; timeout 60 $B/tests/test_sum_order vulkan 2>&1 | tail -2
    step opencl
    echo "== build/tests/test_backends opencl"
    timeout 150 $B/tests/test_backends opencl 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
} > "$O/conformance.txt" 2>&1
step bench
timeout 120 $B/tools/turbokv bench --backend vulkan --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300 \
    --types f16,q8_0,turbo2,turbo3,turbo4,turbo3o > "$O/bench-vulkan.txt" 2>&1
step sdpa
timeout 90 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072 > "$O/sdpa.txt" 2>&1
step merge
for round in 1 2; do
    for merge in 0 1; do
        echo "== ($round) TURBO_VK_MERGE=$merge kvb vulkan f16,q8_0,q8_0:turbo3 4K,16K,128K 1x1 0 8" >> "$O/merge.txt"
        TURBO_VK_MERGE=$merge timeout 100 ./kvb vulkan f16,q8_0,q8_0:turbo3 4K,16K,128K 1x1 0 8 2>&1 |
            grep -v '^#' >> "$O/merge.txt"
    done
done
step per-token
timeout 60 $B/tools/turbokv bench --backend vulkan --per-token --ctx 4K,128K --layers 32 --warm-ms 300 \
    --types turbo3 > "$O/per-token.txt" 2>&1
step denorm
for d in off auto; do
    echo "== TURBO_VK_DENORM=$d turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 --warm-ms 300" \
        "--types turbo3,turbo3o,q8_0" >> "$O/denorm.txt"
    TURBO_VK_DENORM=$d timeout 60 $B/tools/turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 \
        --warm-ms 300 --types turbo3,turbo3o,q8_0 >> "$O/denorm.txt" 2>&1
done
step stats
TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 60 ./kvb vulkan f16,q8_0,q8_0:turbo3,turbo3,turbo3o 4K 1x1,4x1 0 2 2>&1 |
    grep "pipeline" > "$O/stats.txt"
step end
