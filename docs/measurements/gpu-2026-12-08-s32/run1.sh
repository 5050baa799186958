#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 32, run 1. On an H200 first the set of issues 11 and 12
# (session 31's run2.sh: attention of both plugins, 1 and 4 query tokens,
# SDPA, the per-token step) into $OUT/h200/. Then decode_tc's variants,
# measured for the first time with each variant's own plugin (sessions
# 29-31 timed the tree's own: tools/tool.c's plugin search, fixed in
# session 31): .tc-variants/NAME from make-variants.sh (main = this tree;
# session 29's next-8chains, next-table32, next-both; session 30's
# next-fastp, next-unpack, next-unpack-tb; vk-s29 = 96058c6, the plugin of
# session 29's measured run). For each: the file loaded and its registers,
# the conformance tests decode_tc takes, then the turbo3 bench of
# decode.comp and of every variant with TURBO_VK_TC=1, rounds in turn.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
if grep -q H200 "$O/device.txt"; then
  OUT=$O/h200 timeout 330 bash docs/measurements/gpu-2026-12-07-s31/run2.sh > "$O/h200.log" 2>&1
fi
vs=$(ls -d .tc-variants/*/ | sed 's|/$||')
F=$O/variants.txt
for v in $vs; do
  echo "== $v" >> "$O/loaded.txt"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v build/tools/turbokv info 2>&1 | grep -E "^  vulkan " >> "$O/loaded.txt"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 TURBO_VK_PROFILE=1 timeout 60 build/tools/turbokv bench --backend vulkan \
     --types turbo3 --ctx 4K --tokens 1 --seqs 1 2>&1 | grep -E "vkprof: pipeline attention: decode_tc" | sort -u >> "$O/loaded.txt"
done
B="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300"
round() {
  echo "== decode.comp r$1 at $SECONDS s" >> "$F"
  TURBO_PLUGIN_PATH=$P/cpu:$R/.tc-variants/main TURBO_VK_TC=0 timeout 40 $B 2>&1 | grep -A2 "^device time" | grep -E "^turbo3" >> "$F"
  for v in $vs; do
    [ $SECONDS -lt 560 ] || break
    echo "== $v r$1 at $SECONDS s" >> "$F"
    TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 timeout 40 $B 2>&1 | grep -A2 "^device time" | grep -E "^turbo3" >> "$F"
  done
}
round 1
for v in $vs; do
  [ $SECONDS -lt 400 ] || break
  echo "== $v: TURBO_VK_TC=1 test_backends vulkan (attention_agrees,small_values_agree)" >> "$O/check.txt"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 TKV_TESTS=attention_agrees,small_values_agree timeout 60 \
    build/tests/test_backends vulkan 2>&1 | grep -E "PASSED|FAILED|ERROR|worst|relative" >> "$O/check.txt"
done
for r in 2 3; do
  [ $SECONDS -lt 480 ] || break
  round $r
done
cat "$O/loaded.txt" "$O/check.txt" "$F" "$O/device.txt"
