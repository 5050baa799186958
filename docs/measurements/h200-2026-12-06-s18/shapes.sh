#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 18: the OpenCL plugin of this tree on the GPU for the three bench
# shapes (1 query token x 1 sequence, 4 x 1, 1 x 8) at 4K and 128K, kernel
# at full clock (TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20): turbo3o's
# 4-token and 8-sequence points were last measured before session 17's
# change. Run from the worktree copy after `. .gpurt/enter.sh`; writes into
# $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
(echo "== TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 turbokv bench --backend opencl --types turbo3,turbo3o --ctx 4K,128K"
 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 200 build/tools/turbokv bench --backend opencl \
   --types turbo3,turbo3o --ctx 4K,128K; echo "rc $? at ${SECONDS} s") > "$O/shapes.txt" 2>&1
grep -v "^bench:" "$O/shapes.txt" | tail -40
