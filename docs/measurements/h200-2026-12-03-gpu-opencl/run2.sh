#!/bin/bash
# SPDX-License-Identifier: MIT
# Second H200 sweep: what bounds the kernel (register cap, V skipped, the
# kernel alone), and the direct append. Run like run.sh.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
{
echo "== conformance"; timeout 60 build/tests/test_backends opencl 2>&1 | grep -E "vs cpu|PASSED|FAILED|ERROR"
echo "== build log (-cl-nv-verbose)"
TURBO_OCL_BUILD_LOG=1 TURBO_OCL_CL_OPTIONS=-cl-nv-verbose timeout 60 drv/kvb opencl turbo3 4K 1x1 0 3 2>&1 | grep -iE "attn_decode|registers|spill|stack|smem|lmem|cmem" | head -40
} 2>&1 | tee "$O/diag.txt"
for v in "TURBO_OCL_KERNEL_NS=1" "TURBO_OCL_KERNEL_NS=1 TURBO_OCL_CL_OPTIONS=-cl-nv-maxrregcount=64" "TURBO_OCL_APPEND_DIRECT=1"; do
    echo "== $v: drv/kvb opencl turbo3 4K,16K,128K 1x1,4x1" | tee -a "$O/variants2.txt"
    env $v timeout 40 drv/kvb opencl turbo3 4K,16K,128K 1x1,4x1 2>&1 | tee -a "$O/variants2.txt"
done
echo "== V skipped (threshold 0.999), kernel only: drv/kvb opencl turbo3 4K,16K,128K 1x1,4x1 0.999" | tee -a "$O/variants2.txt"
TURBO_OCL_KERNEL_NS=1 timeout 40 drv/kvb opencl turbo3 4K,16K,128K 1x1,4x1 0.999 2>&1 | tee -a "$O/variants2.txt"
echo "== sparse 1e-6: drv/kvb opencl turbo3,f16 16K 1x1 1e-6" | tee -a "$O/variants2.txt"
timeout 30 drv/kvb opencl turbo3 16K,128K 1x1 1e-6 2>&1 | grep attn | tee -a "$O/variants2.txt"
