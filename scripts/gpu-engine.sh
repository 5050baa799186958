#!/bin/bash
# SPDX-License-Identifier: MIT
# The engine (ABI 2.0) numbers on an NVIDIA machine, from a build made
# elsewhere (. .gpurt/enter.sh first, as for scripts/gpu-numbers.sh): the
# conformance and paged tests of each GPU plugin, and `turbokv bench --paged`
# per backend. Writes into OUT (default ./gpu-out).
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/${BUILD:-build}
export TURBO_PLUGIN_PATH=$build/plugins/cpu:$build/plugins/vulkan:$build/plugins/opencl
export TKV_MINIMAL_PLUGIN_DIR=$build/tests/stubs/minimal
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
for b in vulkan opencl; do
    timeout 150 "$build/tests/test_backends" "$b" > "$out/conformance-$b.txt" 2>&1
    echo "conformance $b: exit $?" | tee -a "$out/gpu.txt"
    timeout 100 "$build/tests/test_paged" "$b" > "$out/paged-$b.txt" 2>&1
    echo "paged $b: exit $?" | tee -a "$out/gpu.txt"
    grep -E "vs cpu|FAILED|ERROR" "$out/conformance-$b.txt" "$out/paged-$b.txt"
done
ctx=${CTX:-4K,16K,128K}
for b in ${BACKENDS:-vulkan opencl cpu}; do
    c=$ctx
    [ "$b" = cpu ] && c=4K,16K
    timeout 200 "$build/tools/turbokv" bench --paged --backend "$b" --ctx "$c" > "$out/bench-paged-$b.txt" 2> "$out/bench-paged-$b.log"
    echo "bench --paged $b: exit $?" | tee -a "$out/gpu.txt"
    cat "$out/bench-paged-$b.txt"
done
