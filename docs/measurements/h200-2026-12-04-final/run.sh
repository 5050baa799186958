#!/bin/bash
# SPDX-License-Identifier: MIT
# The session's tree on the H200, in one run: conformance of both GPU
# plugins (vulkan incl. decode_wide.comp's unaligned path, opencl, the
# scalar rules, paged, host, summation order); decode_wide.comp against
# attention.comp (TURBO_VK_WIDE=0) for f16, q8_0 and q8_0 keys with turbo3
# values; `turbokv bench` on vulkan for the README table (device time at a
# held clock); the per-token mode; OpenCL kernel times; PyTorch SDPA f16 in
# the same run. Run from a copy of the tree (build/ present) after
# `. .gpurt/enter.sh`; output under $OUT.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
export TKV_MINIMAL_PLUGIN_DIR=$B/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$B/tests/stubs
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-wide/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 60 ./kvb vulkan f16,q8_0,q8_0:turbo3,turbo3,turbo3o 4K 1x1,4x1 0 2 2>&1 |
    grep "pipeline" > "$O/stats.txt"
for wide in 1 0; do
    echo "== TURBO_VK_WIDE=$wide kvb vulkan f16,q8_0,q8_0:turbo3 4K,16K,128K 1x1,4x1 0 8" >> "$O/wide.txt"
    TURBO_VK_WIDE=$wide timeout 100 ./kvb vulkan f16,q8_0,q8_0:turbo3 4K,16K,128K 1x1,4x1 0 8 2>&1 | grep -v '^#' >> "$O/wide.txt"
done
timeout 120 $B/tools/turbokv bench --backend vulkan --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300 \
    --types f16,q8_0,turbo2,turbo3,turbo4,turbo3o > "$O/bench-vulkan.txt" 2>&1
timeout 90 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072 > "$O/sdpa.txt" 2>&1
timeout 60 $B/tools/turbokv bench --backend vulkan --per-token --ctx 4K,128K --layers 32 --warm-ms 300 \
    --types turbo3 > "$O/per-token-vulkan.txt" 2>&1
{
    for b in vulkan opencl; do
        echo "== build/tests/test_backends $b"; timeout 150 $B/tests/test_backends $b 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
        echo "== build/tests/test_scalar $b"; timeout 100 $B/tests/test_scalar $b 2>&1 | tail -2
        echo "== build/tests/test_paged $b"; timeout 60 $B/tests/test_paged $b 2>&1 | tail -2
        echo "== build/tests/test_host_$b"; timeout 60 $B/tests/test_host_$b 2>&1 | tail -2
    done
    echo "== build/tests/test_backends vulkan TURBO_VK_WIDE=2 TURBO_VK_DECODE_QT=5"
    timeout 100 $B/tests/test_backends vulkan TURBO_VK_WIDE=2 TURBO_VK_DECODE_QT=5 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
} > "$O/conformance.txt" 2>&1
TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 60 $B/tools/turbokv bench --backend opencl --types turbo3 \
    --ctx 4K,128K --tokens 1 --seqs 1 > "$O/bench-opencl.txt" 2>&1
