#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 31, run 5 (run 4 cut to the last minutes of device time), with
# the tool honouring TURBO_PLUGIN_PATH: which file each variant loads, then
# turbo3o, 1 query token, main (build/plugins/vulkan) against the
# ou-shared patch (.tc-variants/vk-ou), and decode_tc (TURBO_VK_TC=1)
# turbo3 of main against session 29's plugin (.tc-variants/vk-s29), one
# round each, in that order, outputs straight into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
F=$O/run5.txt
{ echo "pwd $R"; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > "$F" 2>&1
for v in build/plugins/vulkan .tc-variants/vk-ou .tc-variants/vk-s29; do
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v build/tools/turbokv info 2>&1 | grep -E "^  vulkan " >> "$F"
done
B="build/tools/turbokv bench --backend vulkan --ctx 4K,16K,128K --seqs 1 --warm-ms 300 --tokens 1"
for v in build/plugins/vulkan .tc-variants/vk-ou; do
  echo "== turbo3o $v at ${SECONDS} s" >> "$F"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v timeout 40 $B --types turbo3o 2>&1 | grep -A2 "^device time" | grep "^turbo" >> "$F"
done
for v in build/plugins/vulkan .tc-variants/vk-s29; do
  echo "== decode_tc turbo3 $v at ${SECONDS} s" >> "$F"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 timeout 40 $B --types turbo3 2>&1 | grep -A2 "^device time" | grep "^turbo" >> "$F"
done
cat "$F"
