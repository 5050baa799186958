#!/bin/bash
# SPDX-License-Identifier: MIT
# fp32 subnormals on the H200 (plugins/vulkan/README.md, "fp32 subnormals"):
# whether NVIDIA's driver reports shaderDenormPreserveFloat32, then with
# TURBO_VK_DENORM=auto (the default), off (the shaders without the mode)
# and preserve (the mode forced) the scalar rules (test_scalar vulkan: 2
# cases failed before, ../h200-2026-12-04-final/scalar-vulkan.txt), the
# backend conformance, the summation order and the host's own device;
# the quantize and rows pipelines' compiler statistics with and without
# the mode; what the mode costs a decode step's appends (per-token bench,
# auto against off, interleaved twice). About 5 minutes.
# From the tree's root with build/ built, after `. .gpurt/enter.sh`;
# results under $OUT.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export LD_LIBRARY_PATH=$B/core
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
if command -v vulkaninfo > /dev/null; then
    vulkaninfo 2>/dev/null | grep -iE "deviceName|apiVersion|driverInfo|denorm" > "$O/vulkaninfo.txt"
fi
# the device's driver line says which SPIR-V each setting picks, and
# whether the device reports the property
for d in auto off preserve; do
    echo "== TURBO_VK_DENORM=$d turbokv info" >> "$O/info.txt"
    TURBO_VK_DENORM=$d $B/tools/turbokv info 2>&1 | grep -A3 "^  vulkan" >> "$O/info.txt"
done
for d in auto off preserve; do
    {
        echo "== TURBO_VK_DENORM=$d build/tests/test_scalar vulkan"
        TURBO_VK_DENORM=$d timeout 100 $B/tests/test_scalar vulkan 2>&1 | grep -vE "^\[ (RUN|     OK) "
        echo "rc ${PIPESTATUS[0]}"
        echo "== TURBO_VK_DENORM=$d build/tests/test_backends vulkan"
        TURBO_VK_DENORM=$d timeout 150 $B/tests/test_backends vulkan 2>&1 |
            grep -E "vs cpu|PASSED|FAILED|ERROR|warning|unavailable"
        echo "== TURBO_VK_DENORM=$d build/tests/test_sum_order vulkan"
        TURBO_VK_DENORM=$d timeout 60 $B/tests/test_sum_order vulkan 2>&1 | tail -3
        echo "== TURBO_VK_DENORM=$d build/tests/test_host_vulkan"
        TURBO_VK_DENORM=$d timeout 60 $B/tests/test_host_vulkan 2>&1 | tail -3
    } > "$O/conformance-$d.txt" 2>&1
done
# registers, shared and local memory of the quantize and rows pipelines
for d in off auto; do
    echo "== TURBO_VK_DENORM=$d" >> "$O/stats.txt"
    TURBO_VK_PROFILE=1 TURBO_VK_DENORM=$d timeout 60 $B/tests/test_scalar vulkan 2>&1 |
        grep -E "vkprof: pipeline open" >> "$O/stats.txt"
done
nvidia-smi --query-gpu=timestamp,clocks.sm --format=csv -lms 250 > "$O/clocks.txt" 2>&1 &
clocks=$!
for rep in 1 2; do
    for d in off auto; do
        echo "== run $rep: TURBO_VK_DENORM=$d turbokv bench --per-token --backend vulkan --ctx 4K --layers 32" \
            "--warm-ms 300 --types f16,q8_0,turbo3,turbo3o" >> "$O/bench.txt"
        date +%T.%N >> "$O/bench.txt"
        TURBO_VK_DENORM=$d timeout 100 $B/tools/turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 \
            --warm-ms 300 --types f16,q8_0,turbo3,turbo3o >> "$O/bench.txt" 2>&1
    done
done
kill $clocks 2> /dev/null
