#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 29: issue 12's per-token figures on an H200 (session 28 measured
# them on an H100 only). Checks first (both host tests, the conformance of
# both GPU plugins), then the per-token step of both plugins, turbo3 and
# turbo3o at 4K and 128K (Vulkan with the blocking wait and with the fence
# polled; OpenCL with TURBO_OCL_KERNEL_NS=1 so that its "attn device us" is
# the kernel's own time), both attention kernels alone and PyTorch's f16
# SDPA, in one run. Everything goes into one file, $OUT/h200.txt (run 3 ran it on an H100:
# run3-h100/issue12.txt).
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
F=$O/h200.txt
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan:$R/build/plugins/opencl
say() { echo "$@" | tee -a "$F"; }
step() { # $1 label, $2 timeout, rest: command (env assignments allowed)
  local l=$1 t=$2; shift 2
  say "== $l: $*"
  env "$@" >> "$F.tmp" 2>&1 & local p=$!
  ( sleep "$t"; kill -9 $p 2>/dev/null ) & local k=$!
  wait $p; local rc=$?; kill $k 2>/dev/null
  cat "$F.tmp" >> "$F"; rm -f "$F.tmp"
  say "rc $rc at ${SECONDS} s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee -a "$F"
step host-vulkan 100 build/tests/test_host_vulkan
step host-opencl 100 build/tests/test_host_opencl
T=same_bytes_every_format,attention_agrees,paged_and_options_agree
step conformance-vulkan 150 TKV_TESTS=$T build/tests/test_backends vulkan
step conformance-opencl 150 TKV_TESTS=$T build/tests/test_backends opencl
grep -E "^\[ *(FAILED|PASSED|ERROR) |differ|worst|^rc |^== " "$F"
P="build/tools/turbokv bench --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
step pt-vulkan-wait 120 $P --backend vulkan
step pt-vulkan-spin 120 TKV_BENCH_VK_WAIT=spin $P --backend vulkan
step pt-opencl-ns 120 TURBO_OCL_KERNEL_NS=1 $P --backend opencl
grep -E "^turbo|^type|^rc|^== pt" "$F"
[ $SECONDS -gt 430 ] && exit 0
step sdpa 60 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072
A="build/tools/turbokv bench --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300"
step attn-vulkan 60 $A --backend vulkan
step attn-opencl 60 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $A --backend opencl
sed -n '/^== sdpa/,$p' "$F" | grep -E "^turbo|^rc|^type|^==|sdpa|graph|eager" | head -60
