#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 30, on an NVIDIA machine (after . .gpurt/enter.sh): the checks of
# the tensor-core attention paths with P' times 2^pe (Vulkan decode_tc,
# TURBO_VK_TC=1, and OpenCL's tensor.cl) and session 29's review fixes:
# the conformance with the new small_values_agree (V norms ~1e-4) on both
# plugins, test_host_vulkan with decode_tc, then small_values_agree with
# the plugins of the commit before (.tc-variants/vk-head, ocl-head, built
# here by hand): it must fail there (the mutation evidence); last the
# decode_tc variants speed.sh times (.tc-variants/next-*).
# One output file, $OUT/check.txt.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
F=$O/check.txt
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
say() { echo "$@" >> "$F"; }
step() { # $1 label, $2 timeout, rest: command (env assignments allowed)
  local l=$1 t=$2; shift 2
  say "== $l: $*"
  timeout "$t" env "$@" >> "$F" 2>&1
  say "rc $? at ${SECONDS} s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader >> "$F"
T=attention_agrees,paged_and_options_agree,sparse_v_counts,small_values_agree
step "vulkan decode_tc conformance" 200 TURBO_PLUGIN_PATH=$P/cpu:$P/vulkan TURBO_VK_TC=1 TURBO_LOG=info TKV_TESTS=$T build/tests/test_backends vulkan
step "vulkan decode.comp small" 100 TURBO_PLUGIN_PATH=$P/cpu:$P/vulkan TURBO_VK_TC=0 TKV_TESTS=small_values_agree build/tests/test_backends vulkan
step "opencl tensor conformance" 300 TURBO_PLUGIN_PATH=$P/cpu:$P/opencl TKV_TESTS=$T build/tests/test_backends opencl
step "host vulkan decode_tc" 100 TURBO_PLUGIN_PATH=$P/cpu:$P/vulkan TURBO_VK_TC=1 build/tests/test_host_vulkan
step "vulkan decode_tc of HEAD~ small (must fail)" 100 TURBO_PLUGIN_PATH=$P/cpu:$R/.tc-variants/vk-head TURBO_VK_TC=1 TKV_TESTS=small_values_agree build/tests/test_backends vulkan
step "opencl tensor of HEAD~ small (must fail)" 150 TURBO_PLUGIN_PATH=$P/cpu:$R/.tc-variants/ocl-head TKV_TESTS=small_values_agree build/tests/test_backends opencl
for v in .tc-variants/next-*; do
  step "vulkan $v attention_agrees, small_values_agree" 100 TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 TKV_TESTS=attention_agrees,small_values_agree build/tests/test_backends vulkan
done
grep -E "^== |^rc |PASSED|FAILED|ERROR|worst|relative|tensor|decode_tc|probe" "$F" | cut -c1-220
