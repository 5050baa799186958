#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 17: the GPU numbers of this tree in one run (scripts/gpu-numbers.sh:
# conformance of both GPU plugins against cpu, `turbokv bench --backend B
# --ctx $CTX --tokens 1 --seqs 1 --warm-ms 300 --types
# f16,q8_0,turbo2,turbo3,turbo4,turbo3o` for vulkan and opencl, PyTorch's
# f16 SDPA in the same run), then the OpenCL kernels at full clock
# (TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20). The outputs go into one
# archive (numbers.tgz: a run brings back at most 8 files).
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
OUT=$W CTX=${CTX:-4K,16K,128K} timeout 480 bash scripts/gpu-numbers.sh > "$W/gpu-numbers.log" 2>&1
echo "gpu-numbers rc $? at ${SECONDS} s" >> "$W/gpu-numbers.log"
if [ $SECONDS -lt 500 ]; then
  TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 \
    timeout $((580 - SECONDS)) build/tools/turbokv bench --backend opencl --types f16,turbo3,turbo3o \
    --ctx ${CTX:-4K,16K,128K} --tokens 1 --seqs 1 > "$W/opencl-kernel.txt" 2>&1
  echo "rc $? at ${SECONDS} s" >> "$W/opencl-kernel.txt"
fi
tar czf "$O/numbers.tgz" -C "$W" .
exit 0
