#!/bin/bash
# SPDX-License-Identifier: MIT
# The specialized attention programs on the H200: conformance (timed), the
# build time of each program (TURBO_LOG=debug), turbo3 kernel times.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
M=docs/measurements/h200-2026-12-04-opencl-kernels
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm -Wl,-rpath,$R/build/core || exit 1
{
echo "== conformance, specialized (the GPU default): build/tests/test_backends opencl"
s=$(date +%s); timeout 150 build/tests/test_backends opencl 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"; echo "rc ${PIPESTATUS[0]} in $(( $(date +%s) - s )) s"
echo "== program builds: TURBO_LOG=debug kvb opencl turbo3,q8_0,f16 4K 1x1"
TURBO_LOG=debug KVB_APPEND=0 timeout 40 ./kvb opencl turbo3,q8_0,f16 4K 1x1 2>&1 | grep -E "built the|did not build|attn"
echo "== kernel median, specialized: kvb opencl turbo3 4K,16K,128K 1x1"
TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 KVB_APPEND=0 timeout 30 ./kvb opencl turbo3 4K,16K,128K 1x1 2>&1 | grep attn
} > "$O/check.txt" 2>&1
cat "$O/check.txt"
