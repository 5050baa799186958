#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 31, run 2: the set of issues 11 and 12 on whatever card comes
# (meant for the H200, which sessions 24-30 never got): decode attention,
# 1 and 4 query tokens, of both plugins' fastest paths (OpenCL's tensor
# kernel with the kernel repeated at full clock; Vulkan's decode.comp with
# 300 ms of warm-up), PyTorch SDPA f16 in the same run, then the
# per-token step of both plugins (append one token + attention on device
# tensors, 32 layers; "fused us": tkv_cache_append_attention).
# Outputs straight into $OUT, so a run cut short returns what it did.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl:$R/build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
run() { # $1 file, $2 timeout, rest: command (env assignments allowed)
  local f=$1 t=$2; shift 2
  (echo "== $*"; timeout "$t" env "$@"; echo "rc $? at ${SECONDS} s") >> "$O/$f" 2>&1
}
A="build/tools/turbokv bench --types turbo3,turbo3o --ctx 4K,16K,128K --seqs 1 --warm-ms 300"
for t in 1 4; do
  run attn-opencl.txt 120 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $A --backend opencl --tokens $t
  run attn-vulkan.txt 100 $A --backend vulkan --tokens $t
done
run sdpa.txt 120 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072
grep -E "^==|^turbo|^rc |device time" "$O"/attn-*.txt; cat "$O/sdpa.txt"
T="build/tools/turbokv bench --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
run per-token-opencl.txt 120 TURBO_OCL_KERNEL_NS=1 $T --backend opencl
run per-token-vulkan.txt 150 $T --backend vulkan
grep -E "^==|^turbo|^rc " "$O"/per-token-*.txt
cat "$O/device.txt"
