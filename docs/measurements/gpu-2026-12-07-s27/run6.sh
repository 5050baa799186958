#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27, sixth run: the tree at e7219ca+ (the fused step takes f16 and
# bf16 rows; the bench reports the fused step's host and device time).
# 1. test_host_vulkan (its fused test now with f16 and bf16 steps),
#    test_vulkan_ops (the quantize shader's encoder, now encode.glsl, under
#    every knob it has);
# 2. the per-token step of both plugins with the fused step's host time
#    inside its calls and (Vulkan) its device time.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl:$R/build/plugins/vulkan
for t in "build/tests/test_host_vulkan" "build/plugins/vulkan/test_vulkan_ops $R/build/plugins/vulkan/turbokv-vulkan.so"; do
  n=$(basename ${t%% *})
  (echo "== $t"; timeout 200 $t; echo "rc $? at ${SECONDS} s") > "$O/$n.txt" 2>&1
  grep -E "^==|^\[ *(FAILED|PASSED|ERROR) |worst|rc " "$O/$n.txt"
done
for b in vulkan opencl; do
  P="turbokv bench --backend $b --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
  (echo "== TURBO_OCL_KERNEL_NS=1 $P"; TURBO_OCL_KERNEL_NS=1 timeout 150 build/tools/$P; echo "rc $? at ${SECONDS} s") > "$O/per-token-$b.txt" 2>&1
  grep "^==\|^turbo\|rc " "$O/per-token-$b.txt"
done
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
