#!/bin/bash
# SPDX-License-Identifier: MIT
# decode_wide.comp (plugins/vulkan/shaders/decode_wide.comp: f16 and q8_0
# keys, lanes owning coordinates) on the H200, Llama 3 8B geometry (32 query
# heads, 8 kv heads, head_dim 128), device time per call, the clock raised
# by 300 ms of the same calls before each point (KVB_WARM_MS=300).
#   stats.txt        the driver compiler's statistics of each pipeline
#                    (registers, shared and local memory), default and with
#                    other load-group sizes (TURBO_VK_WIDE_WORDS)
#   wide.txt         this build (TURBO_VK_WIDE=1) against attention.comp
#                    (TURBO_VK_WIDE=0) in the same run: f16, q8_0 and q8_0
#                    keys with turbo3 values (k8v3) at 4K, 16K, 128K, 1 and
#                    4 tokens (ABAB), then 8 sequences at 16K and 128K (AB)
#   tune.txt         TURBO_VK_WIDE_WORDS 16 / 32 (default) / 64 x
#                    TURBO_VK_WORKGROUPS 1024 (default: 256 workgroups) /
#                    2112 (528) at 16K and 128K, 1 token; 4 tokens with units
#                    of 4 (default) and 8 query rows (TURBO_VK_DECODE_QT)
#   skip.txt         f16 and q8_0 with stages left out (TURBO_VK_SHADER_SKIP)
#                    at 16K and 128K, 1 token
#   conformance.txt  build/tests/test_backends vulkan, default and on the
#                    shader's unaligned path with units of 5 query rows
#   sdpa.txt         PyTorch's SDPA f16 in the same session
# kvb.c here is ../h200-2026-12-04-gpu-vulkan/kvb.c with K:V pairs. About 8
# minutes. Run from a copy of the tree (build/ present) after
# `. .gpurt/enter.sh`; output under $OUT.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-wide/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
TYPES=f16,q8_0,q8_0:turbo3

for words in 32 16 64; do
    echo "== TURBO_VK_WIDE_WORDS=$words TURBO_VK_PROFILE=1 kvb vulkan $TYPES 4K 1x1,4x1 0 2" >> "$O/stats.txt"
    TURBO_VK_WIDE_WORDS=$words TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 60 ./kvb vulkan $TYPES 4K 1x1,4x1 0 2 2>&1 |
        grep "pipeline" >> "$O/stats.txt"
done

for round in 1 2; do
    for wide in 1 0; do
        echo "== ($round) TURBO_VK_WIDE=$wide kvb vulkan $TYPES 4K,16K,128K 1x1,4x1 0 8" >> "$O/wide.txt"
        TURBO_VK_WIDE=$wide timeout 120 ./kvb vulkan $TYPES 4K,16K,128K 1x1,4x1 0 8 2>&1 | grep -v '^#' >> "$O/wide.txt"
    done
done
for wide in 1 0; do
    echo "== TURBO_VK_WIDE=$wide kvb vulkan $TYPES 16K,128K 1x8 0 8" >> "$O/wide.txt"
    TURBO_VK_WIDE=$wide timeout 120 ./kvb vulkan $TYPES 16K,128K 1x8 0 8 2>&1 | grep -v '^#' >> "$O/wide.txt"
done

for words in 32 16 64; do
    for wgs in 1024 2112; do
        echo "== TURBO_VK_WIDE_WORDS=$words TURBO_VK_WORKGROUPS=$wgs kvb vulkan $TYPES 16K,128K 1x1 0 8" >> "$O/tune.txt"
        TURBO_VK_WIDE_WORDS=$words TURBO_VK_WORKGROUPS=$wgs timeout 60 ./kvb vulkan $TYPES 16K,128K 1x1 0 8 2>&1 |
            grep -v '^#' >> "$O/tune.txt"
    done
done

for qt in 4 8; do
    echo "== TURBO_VK_DECODE_QT=$qt kvb vulkan $TYPES 16K,128K 4x1 0 8" >> "$O/tune.txt"
    TURBO_VK_DECODE_QT=$qt timeout 60 ./kvb vulkan $TYPES 16K,128K 4x1 0 8 2>&1 | grep -v '^#' >> "$O/tune.txt"
done

for skip in "" kloads vloads scores values "scores,values" "kloads,vloads,scores,values"; do
    echo "== TURBO_VK_SHADER_SKIP=$skip kvb vulkan f16,q8_0 16K,128K 1x1 0 8" >> "$O/skip.txt"
    TURBO_VK_SHADER_SKIP=$skip timeout 60 ./kvb vulkan f16,q8_0 16K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/skip.txt"
done

for env in "" "TURBO_VK_WIDE=2 TURBO_VK_DECODE_QT=5"; do
    echo "== build/tests/test_backends vulkan $env" >> "$O/conformance.txt"
    timeout 150 $B/tests/test_backends vulkan $env 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR" >> "$O/conformance.txt"
done

echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072" > "$O/sdpa.txt"
timeout 60 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072 >> "$O/sdpa.txt" 2>&1
