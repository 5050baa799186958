#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 13's first H200 run, in order of what matters if the lease ends:
#   prescale.txt     decode.comp storing each V row's weights times its scale
#                    (this tree) against the plugin before (base-vulkan/),
#                    ABAB, turbo2/3/4 at 4K/16K/128K; the compiler's
#                    statistics of both (TURBO_VK_PROFILE=1)
#   wgs.txt          session 11's run4.sh: decode.comp's workgroups per call
#                    (TURBO_VK_WORKGROUPS 1024 = today's 256 workgroups, 1568 =
#                    one wave of 3 an SM, 2048), turbo3/turbo4/turbo3o at
#                    16K/128K, twice; 4 tokens / 8 sequences; clock records
#   conformance.txt  the OpenCL plugin since session 11 (queries read and
#                    output rows written in the host's buffers): test_backends,
#                    test_host_opencl, test_scalar on opencl; test_host_vulkan
#   per-token.txt    `turbokv bench --per-token` on opencl and vulkan
# From a copy of the tree (build/ present) after `. .gpurt/enter.sh`;
# output under $OUT. About 5 minutes.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
step prescale
(
    POINTS=prescale.txt CLOCK_LINES=0
    source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
    BASE=TURBO_PLUGIN_PATH=$B/plugins/cpu:$R/base-vulkan
    for round in 1 2; do
        point $BASE -- turbo3,turbo4,turbo2 4K,16K,128K 1x1 0 8
        point KVB_BUILD=new -- turbo3,turbo4,turbo2 4K,16K,128K 1x1 0 8
    done
    point $BASE TURBO_VK_PROFILE=1 -- turbo3 16K 1x1 0 2
    point TURBO_VK_PROFILE=1 -- turbo3 16K 1x1 0 2
)
step wgs
OUT=$O bash docs/measurements/h200-2026-12-05-s11/run4.sh
step conformance
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl
for t in "test_backends opencl" "test_host_opencl" "test_scalar opencl" "test_host_vulkan"; do
    echo "== build/tests/$t" >> "$O/conformance.txt"
    timeout 120 $B/tests/$t >> "$O/conformance.txt.full" 2>&1
    echo "rc $?" >> "$O/conformance.txt"
    tail -3 "$O/conformance.txt.full" >> "$O/conformance.txt"
done
step per-token
for be in opencl vulkan; do
    echo "== turbokv bench --backend $be --per-token --ctx 4K,128K --types turbo3" >> "$O/per-token.txt"
    timeout 150 $B/tools/turbokv bench --backend $be --per-token --ctx 4K,128K --layers 32 --warm-ms 300 \
        --types turbo3 2>&1 | grep -v "^bench:" >> "$O/per-token.txt"
done
step done
