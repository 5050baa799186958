#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 17: the owner masks' walk with every index constant (acc_o in
# registers): the turbo3o program's stack frame (-cl-nv-verbose) and its
# kernel time at 4K / 128K, one token (TURBO_OCL_KERNEL_NS=1
# TURBO_OCL_REPEAT=20); diag.sh found acc_o in local memory (704-byte stack
# frame against turbo3's 192) and 1208-1344 us at 128K.
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 \
  timeout 150 build/tools/turbokv bench --backend opencl --types turbo3o,turbo3 --ctx 4K,128K --tokens 1 --seqs 1 > "$O/check-full.txt" 2>&1
echo "rc $?" >> "$O/check-full.txt"
grep -v "^ptxas\|^opencl build log\|^$\|warning generated\|^bench:" "$O/check-full.txt" > "$O/check.txt"
grep -n "SPEC_K_TYPE=[0-9]*u -DTKV_SPEC_V_TYPE=[0-9]*u\|stack frame\|Used [0-9]* registers" "$O/check-full.txt" | sed 's/.*\(-DTKV_SPEC_K_TYPE=[0-9]*u -DTKV_SPEC_V_TYPE=[0-9]*u\).*/\1/' > "$O/check-regs.txt"
rm -f "$O/check-full.txt"
exit 0
