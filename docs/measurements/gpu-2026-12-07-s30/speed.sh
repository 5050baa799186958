#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 30, on an NVIDIA machine (after . .gpurt/enter.sh): what P'
# times 2^pe costs, and session 29's decode_tc variants. turbo3 attention,
# 1 query token, 4K / 16K / 128K, device time (TURBO_VK_TC, TURBO_OCL_KERNEL_NS):
# Vulkan decode.comp, decode_tc of this tree, decode_tc of HEAD~ and of
# the prepared patches (.tc-variants/next-*, built on HEAD~ by
# make-variants.sh of session 29); OpenCL's tensor kernel of this tree and
# of HEAD~; two rounds in turn, then 4 query tokens of this tree's three.
# One output file, $OUT/speed.txt.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
F=$O/speed.txt
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader >> "$F"
B="build/tools/turbokv bench --types turbo3 --ctx 4K,16K,128K --seqs 1 --warm-ms 300"
one() { # label, plugin dir, backend, tokens, env...
  local l=$1 d=$2 b=$3 n=$4; shift 4
  echo "== $l ($b, $n token(s)) at ${SECONDS} s" >> "$F"
  timeout 90 env TURBO_PLUGIN_PATH=$P/cpu:$d "$@" $B --backend $b --tokens $n 2>&1 | grep -E "^turbo3|^type" | head -4 >> "$F"
}
vs=$(ls -d .tc-variants/next-*/ 2>/dev/null | sed 's|/$||')
for r in 1 2; do
  one "decode.comp r$r" $P/vulkan vulkan 1 TURBO_VK_TC=0
  one "decode_tc r$r" $P/vulkan vulkan 1 TURBO_VK_TC=1
  one "decode_tc HEAD~ r$r" $R/.tc-variants/vk-head vulkan 1 TURBO_VK_TC=1
  for v in $vs; do
    one "$v r$r" $R/$v vulkan 1 TURBO_VK_TC=1
  done
  one "opencl tensor r$r" $P/opencl opencl 1 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
  one "opencl tensor HEAD~ r$r" $R/.tc-variants/ocl-head opencl 1 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
done
one "decode.comp 4 tokens" $P/vulkan vulkan 4 TURBO_VK_TC=0
one "decode_tc 4 tokens" $P/vulkan vulkan 4 TURBO_VK_TC=1
one "opencl tensor 4 tokens" $P/opencl opencl 4 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
cat "$F"
