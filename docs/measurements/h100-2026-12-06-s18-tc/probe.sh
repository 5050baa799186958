#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 18, for the port of the tensor-core kernel (written in session
# 18, which had no device time left; run in session 19: run10-probes/).
# Built on the development machine:
#   cc -O2 -o .dev-tc/probe_ocl probe_ocl.c -lOpenCL
#   cc -O2 -o .dev-tc/probe_vk probe_vk.c -lvulkan
#   glslangValidator -V --target-env vulkan1.2 -o .dev-tc/probe_vk_layout.spv probe_vk_layout.comp
#   cc -O2 -o .dev-tc/tcdecode_ocl tcdecode_ocl.c -lOpenCL -lm
# run from the worktree copy after `. .gpurt/enter.sh` (carry .dev-tc):
#   probe_ocl: whether NVIDIA's OpenCL compiler takes mma.sync m16n8k16,
#              cp.async and shfl.sync as asm(), and computes them right;
#   probe_vk:  VK_NV_cooperative_matrix's shapes and fragment element layout;
#   tcdecode_ocl: tcdecode.cu's multi_kernel as OpenCL C (tcdecode.cl), checked
#              against fp64 and timed at 4K / 16K / 128K for 1, 2, 4 tokens.
# About a minute on the GPU machine (most of it the host's fp64 reference).
set -u
O=${OUT:-/tmp/out}
D=${PROBES:-$PWD/.dev-tc}
mkdir -p "$O"
timeout 60 "$D/probe_ocl" > "$O/probe-ocl.txt" 2>&1
echo "rc $?" >> "$O/probe-ocl.txt"
timeout 60 "$D/probe_vk" "$D/probe_vk_layout.spv" > "$O/probe-vk.txt" 2>&1
echo "rc $?" >> "$O/probe-vk.txt"
(timeout 300 "$D/tcdecode_ocl" "$PWD/docs/measurements/h100-2026-12-06-s18-tc/tcdecode.cl" 4096,16384,131072; echo "rc $?") \
  > "$O/tcdecode-ocl.txt" 2>&1
cat "$O/probe-ocl.txt" "$O/probe-vk.txt" "$O/tcdecode-ocl.txt"
