#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 28: queued attentions' inputs in the input ring (host.c,
# vk_input_slot) and the fused step's shifted chunk grid (attention.c,
# grid_off) checked on NVIDIA (test_host_vulkan with its 300 calls in one
# command buffer, the conformance), then the per-token
# step: capture into the commands and the unshifted grid
# (TURBO_VK_INPUT_RING=0 TURBO_VK_FUSED_STEP=noshift: session 27's plugin),
# the ring alone, the ring and the shift; the fence polled. Then the plugin
# as it is with the blocking wait and, where time is left, OpenCL's step,
# both attention kernels alone and PyTorch's f16 SDPA, in the same run.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$O/gpu.txt"
(echo "== test_host_vulkan"; timeout 100 build/tests/test_host_vulkan; echo "rc $? at ${SECONDS} s") > "$O/host-vulkan.txt" 2>&1
grep -E "^\[ *(FAILED|PASSED|ERROR) |worst|rc " "$O/host-vulkan.txt"
T=same_bytes_every_format,attention_agrees,paged_and_options_agree
(echo "== TKV_TESTS=$T test_backends vulkan"; TKV_TESTS=$T timeout 150 build/tests/test_backends vulkan; echo "rc $? at ${SECONDS} s") > "$O/conformance-vulkan.txt" 2>&1
grep -E "^\[ *(FAILED|PASSED|ERROR) |differ|rc " "$O/conformance-vulkan.txt"
P="turbokv bench --per-token --types turbo3 --ctx 4K,128K --layers 32 --warm-ms 300 --backend vulkan"
ab() { # $1 ring, $2 fused step knob
  (echo "== TKV_BENCH_VK_WAIT=spin TURBO_VK_INPUT_RING=$1 TURBO_VK_FUSED_STEP=$2 $P"; TKV_BENCH_VK_WAIT=spin TURBO_VK_INPUT_RING=$1 TURBO_VK_FUSED_STEP=$2 timeout 100 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token-ring$1-$2.txt" 2>&1
  echo "== ring $1 fused $2"; grep -E "^turbo|^rc" "$O/per-token-ring$1-$2.txt" | tail -3
}
ab 0 noshift; ab 1 noshift; ab 1 1
P="turbokv bench --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
for b in vulkan opencl; do
  [ $b = opencl ] && [ $SECONDS -gt 360 ] && break
  (echo "== $P --backend $b"; timeout 120 build/tools/$P --backend $b; echo "rc $? at ${SECONDS} s") > "$O/per-token-$b.txt" 2>&1
  echo "== $b"; grep -E "^turbo|^rc" "$O/per-token-$b.txt"
done
[ $SECONDS -gt 420 ] && exit 0
(python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072; echo "rc $? at ${SECONDS} s") > "$O/sdpa.txt" 2>&1
cat "$O/sdpa.txt"
A="turbokv bench --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300"
(echo "== $A --backend vulkan"; timeout 60 build/tools/$A --backend vulkan; echo "rc $? at ${SECONDS} s") > "$O/attn-vulkan.txt" 2>&1
(echo "== TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $A --backend opencl"; TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 60 build/tools/$A --backend opencl; echo "rc $? at ${SECONDS} s") > "$O/attn-opencl.txt" 2>&1
for b in vulkan opencl; do echo "== attn $b"; grep -E "^turbo|^rc|^type" "$O/attn-$b.txt"; done
