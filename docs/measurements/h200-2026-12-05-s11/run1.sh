#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 11, first H200 run: the build with decode_wide.comp restored
# (session 10's check.sh, its first run on the GPU) and its conformance.
#   check-stats.txt  the driver compiler's statistics of the f16 / q8_0 pipelines
#   check.txt        f16, q8_0, turbo3 at 16K / 128K (kvb, 300 ms warm-up)
#   check-sdpa.txt   PyTorch f16 SDPA in the same run
#   conformance.txt  test_backends vulkan and opencl, test_scalar vulkan
#   per-token.txt    `turbokv bench --per-token`, 4K and 128K, turbo3 / q8_0
# From a copy of the tree (build/ present) after `. .gpurt/enter.sh`; output
# under $OUT. About 5 minutes.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
step check
bash docs/measurements/h200-2026-12-05-s10/check.sh
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl
step per-token
timeout 60 $B/tools/turbokv bench --backend vulkan --per-token --ctx 4K,128K --layers 32 --warm-ms 300 \
    --types turbo3,q8_0 > "$O/per-token.txt" 2>&1
step conformance
{
    echo "== build/tests/test_scalar vulkan"
    timeout 60 $B/tests/test_scalar vulkan 2>&1 | tail -3
    echo "== build/tests/test_backends vulkan"
    timeout 200 $B/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
    step opencl
    echo "== build/tests/test_backends opencl"
    timeout 200 $B/tests/test_backends opencl 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
} > "$O/conformance.txt" 2>&1
step end
