#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 29: decode_tc, the Vulkan plugin's turbo3 attention on the tensor
# cores (plugins/vulkan/shaders/tensor.glsl, tensor.c). Checks first: the
# layout probe's verdict (TURBO_LOG=info), test_host_vulkan and the
# conformance with decode_tc taking the turbo3 calls; then the attention
# bench with TURBO_VK_TC=0 (decode.comp) and =1 (decode_tc), in turn,
# and the OpenCL tensor kernel. One output file, $OUT/tc.txt.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
F=$O/tc.txt
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
A="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K --tokens 1 --seqs 1 --warm-ms 100"
step probe 60 TURBO_VK_TC=1 TURBO_LOG=info TURBO_VK_PROFILE=1 $A
sed -i '/^vkprof: attention n_out/d' "$F" # (a line a call)
grep -E "tensor|cooperative|decode_tc|Register|^turbo3" "$F" | head -20
step host-vulkan 100 TURBO_VK_TC=1 build/tests/test_host_vulkan
T=attention_agrees,paged_and_options_agree,sparse_v_counts
step conformance 200 TURBO_VK_TC=1 TKV_TESTS=$T build/tests/test_backends vulkan
grep -E "^\[ *(FAILED|PASSED|ERROR) |worst|relative|^rc |^== " "$F" | tail -30
B="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K,16K,128K --seqs 1 --warm-ms 300"
for r in 1 2; do
  step "decode.comp r$r" 90 TURBO_VK_TC=0 $B --tokens 1
  step "decode_tc r$r" 90 TURBO_VK_TC=1 $B --tokens 1
done
step "decode.comp 4 tokens" 90 TURBO_VK_TC=0 $B --tokens 4
step "decode_tc 4 tokens" 90 TURBO_VK_TC=1 $B --tokens 4
step opencl 90 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 build/tools/turbokv bench --backend opencl --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300
grep -E "^turbo|^type|^rc|^== (dec|ope)" "$F"
