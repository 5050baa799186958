#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 18, for the port of the tensor-core kernel (not yet run: no device
# time was left). Built on the development machine:
#   cc -O2 -o .dev-tc/probe_ocl probe_ocl.c -lOpenCL
#   cc -O2 -o .dev-tc/probe_vk probe_vk.c -lvulkan
#   glslangValidator -V --target-env vulkan1.2 -o .dev-tc/probe_vk_layout.spv probe_vk_layout.comp
# run from the worktree copy after `. .gpurt/enter.sh` (carry .dev-tc):
#   probe_ocl: whether NVIDIA's OpenCL compiler takes mma.sync m16n8k16,
#              cp.async and shfl.sync as asm(), and computes them right;
#   probe_vk:  VK_NV_cooperative_matrix's shapes and fragment element layout.
# A few seconds on the GPU machine.
set -u
O=${OUT:-/tmp/out}
D=${PROBES:-$PWD/.dev-tc}
mkdir -p "$O"
timeout 60 "$D/probe_ocl" > "$O/probe-ocl.txt" 2>&1
echo "rc $?" >> "$O/probe-ocl.txt"
timeout 60 "$D/probe_vk" "$D/probe_vk_layout.spv" > "$O/probe-vk.txt" 2>&1
echo "rc $?" >> "$O/probe-vk.txt"
cat "$O/probe-ocl.txt" "$O/probe-vk.txt"
