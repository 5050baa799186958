#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27: the Vulkan plugin's fused decode step (ABI 2.7
# append_attention in one dispatch: decode.comp's append variant, which
# quantizes the new rows in the workgroups whose chunks hold them) on an
# NVIDIA GPU. Outputs straight into $OUT, checks of the code first:
# 1. test_host_vulkan (fused_step_matches_two_calls among its tests) and
#    the conformance (stored bytes of every format: the quantize shader's
#    encoder moved into encode.glsl; attention; paged rows and options);
# 2. the Vulkan per-token mode, turbo3 and turbo3o at 4K and 128K ("fused
#    us": each layer one tkv_cache_append_attention, now one dispatch);
# 3. the same step for OpenCL (issue 12's figures on this GPU);
# 4. the registers of decode and decode_append (TURBO_VK_PROFILE=1);
# 5. the 1-token attention of both plugins.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl:$R/build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
(echo "== test_host_vulkan"; timeout 120 build/tests/test_host_vulkan; echo "rc $? at ${SECONDS} s") > "$O/host-vulkan.txt" 2>&1
grep -E "^\[ *(OK|FAILED|PASSED|ERROR) |worst|rc " "$O/host-vulkan.txt"
T=same_bytes_every_format,attention_agrees,paged_and_options_agree
(echo "== TKV_TESTS=$T test_backends vulkan"; TKV_TESTS=$T timeout 200 build/tests/test_backends vulkan; echo "rc $? at ${SECONDS} s") > "$O/conformance-vulkan.txt" 2>&1
grep -E "^\[ *(OK|FAILED|PASSED|ERROR) |differ|rc " "$O/conformance-vulkan.txt"
for b in vulkan opencl; do
  P="turbokv bench --backend $b --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
  (echo "== TURBO_OCL_KERNEL_NS=1 $P"; TURBO_OCL_KERNEL_NS=1 timeout 150 build/tools/$P; echo "rc $? at ${SECONDS} s") > "$O/per-token-$b.txt" 2>&1
  grep "^==\|^turbo\|rc " "$O/per-token-$b.txt"
done
(echo "== TURBO_VK_PROFILE=1 turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K --layers 2"
 TURBO_VK_PROFILE=1 timeout 60 build/tools/turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K --layers 2; echo "rc $? at ${SECONDS} s") > "$O/profile-vulkan.txt" 2>&1
grep -i "decode" "$O/profile-vulkan.txt" | grep -iv "^vkprof: attention" | cut -c1-300 | head -12
for b in vulkan opencl; do
  B="turbokv bench --backend $b --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1"
  (echo "== TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
   TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 100 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$O/bench-$b.txt" 2>&1
  grep -A4 "^device time" "$O/bench-$b.txt"; grep "rc " "$O/bench-$b.txt"
done
cat "$O/device.txt"
