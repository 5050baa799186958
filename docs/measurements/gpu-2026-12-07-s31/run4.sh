#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 31, run 4: run 3's comparison again with the tool honouring
# TURBO_PLUGIN_PATH before the build tree's plugin directories (tools/tool.c;
# run 3's regs.txt showed main's plugin and this tree's with one shared
# layout, that of this tree). Prints which file each variant loaded, then
# turbo3o and turbo3, 1 query token, this tree's decode.comp (outlier sums
# in shared memory) against main's (.tc-variants/vk-main), two rounds;
# then session 30's open question again: decode_tc (TURBO_VK_TC=1) of
# main against the plugin session 29 measured (96058c6, .tc-variants/vk-s29).
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
{ echo "pwd $R"; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; } > "$O/device.txt" 2>&1
B="build/tools/turbokv bench --backend vulkan --types turbo3o,turbo3 --ctx 4K,16K,128K --seqs 1 --warm-ms 300 --tokens 1"
for v in build/plugins/vulkan .tc-variants/vk-main .tc-variants/vk-s29; do
  echo "== $v" >> "$O/loaded.txt"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v build/tools/turbokv info 2>&1 | grep -E "^  (cpu|vulkan) " >> "$O/loaded.txt"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_PROFILE=1 timeout 60 build/tools/turbokv bench --backend vulkan \
     --types turbo3o --ctx 4K --tokens 1 --seqs 1 2>&1 | grep -E "vkprof: pipeline attention: decode pipeline" | sed 's/.*Register/Register/' | sort -u >> "$O/loaded.txt"
done
cat "$O/loaded.txt"
for r in 1 2; do
  for v in build/plugins/vulkan .tc-variants/vk-main; do
    echo "== $v r$r at ${SECONDS} s" >> "$O/bench.txt"
    TURBO_PLUGIN_PATH=$P/cpu:$R/$v timeout 60 $B 2>&1 | grep -A3 "^device time" | grep -E "^turbo" >> "$O/bench.txt"
  done
done
T="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K,16K,128K --seqs 1 --warm-ms 300 --tokens 1"
for r in 1 2; do
  for v in .tc-variants/vk-main .tc-variants/vk-s29; do
    echo "== decode_tc $v r$r at ${SECONDS} s" >> "$O/bench.txt"
    TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 timeout 60 $T 2>&1 | grep -A3 "^device time" | grep -E "^turbo" >> "$O/bench.txt"
  done
done
cat "$O/bench.txt" "$O/device.txt"
