#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 14's first run, on this tree (session 13's last commit): what
# session 13 built but never ran on NVIDIA, and the README's GPU table
# taken again from one build. In order:
#   conformance.txt  test_vulkan_ops, test_backends vulkan, test_host_vulkan,
#                    test_backends opencl (generic program)
#   wide.txt         decode_wide.comp (f16, q8_0) with the former workgroup
#                    rule (TURBO_VK_WORKGROUPS=1024: 256 workgroups) against
#                    the one-wave rule (no variable), ABAB at 16K/128K
#   table.txt        1 token: turbo3/4/2, turbo3o, q8_0, f16 at 4K-128K;
#                    turbo3 and turbo4 with 4 tokens and 8 sequences
#   sdpa.json        PyTorch SDPA f16, eager and CUDA graph, same run
#   per-token.txt    `turbokv bench --per-token` on vulkan, turbo3
#   coopmat.txt      what the driver offers of cooperative matrices
# From a copy of the tree (build/ present) after `. .gpurt/enter.sh`;
# output under $OUT. About 8 minutes; later steps are left out past 500 s.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
late() { [ $(($(date +%s) - t0)) -gt 500 ] && { step "left out: $*"; return 0; }; return 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
POINTS=wide.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
step conformance
for t in "test_vulkan_ops" "test_backends vulkan" "test_host_vulkan" "test_backends opencl"; do
    echo "== $t" >> "$O/conformance.txt"
    TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl TURBO_OCL_SPECIALIZE=0 \
        timeout 120 $B/tests/$t > "$O/tmp.txt" 2>&1
    echo "rc $?" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
step wide
for round in 1 2; do
    point TURBO_VK_WORKGROUPS=1024 -- f16,q8_0 16K,128K 1x1 0 8
    point KVB_RULE=wave -- f16,q8_0 16K,128K 1x1 0 8
done
step table
POINTS=table.txt
point KVB_RUN=1 -- turbo3,turbo4,turbo2,turbo3o,q8_0,f16 4K,16K,64K,128K 1x1 0 8
late "4 tokens, 8 sequences" || point KVB_RUN=1 -- turbo3,turbo4 4K,16K,128K 4x1,1x8 0 4
step sdpa
late sdpa || timeout 120 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 --json > "$O/sdpa.json" 2> "$O/sdpa.log"
step per-token
late per-token || TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan timeout 90 $B/tools/turbokv bench --per-token \
    --backend vulkan --ctx 4K,128K --types turbo3 --layers 32 --warm-ms 300 > "$O/per-token.txt" 2>&1
step coopmat
timeout 30 vulkaninfo 2>/dev/null | grep -i -B2 -A12 "cooperative" | head -150 > "$O/coopmat.txt"
rm -f "$O/tmp.txt"
step done
