#!/bin/bash
# SPDX-License-Identifier: MIT
# Written in session 29 for decode_tc with next-8chains.patch applied and
# not run (the session's device time ran out): the check (attention_agrees),
# then where decode_tc's time goes (TURBO_VK_TC=1), turbo3,
# 1 query token at 4K and 128K: decode.comp and decode_tc whole, then
# decode_tc with parts left out (TURBO_VK_SHADER_SKIP: values, scores,
# kloads+vloads, scores+values; the outputs are wrong then), then both with
# their clock records (TURBO_VK_CLOCK=1: prologue, loop, partial, merge per
# workgroup; a few of the vkclock lines). One output file, $OUT/parts.txt.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
F=$O/parts.txt
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> "$F"
echo "== TURBO_VK_TC=1 TKV_TESTS=attention_agrees test_backends vulkan" >> "$F"
TURBO_VK_TC=1 TKV_TESTS=attention_agrees timeout 120 build/tests/test_backends vulkan 2>&1 |
  grep -E "PASSED|FAILED|ERROR|worst|relative" >> "$F"
B="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K,128K --tokens 1 --seqs 1 --warm-ms 300"
run() { # label, env...
  local l=$1; shift
  echo "== $l: $*" >> "$F"
  env "$@" timeout 60 $B 2>&1 | grep -E "^turbo3|^type" | head -4 >> "$F"
}
run decode.comp TURBO_VK_TC=0
run decode_tc TURBO_VK_TC=1
run "tc -values" TURBO_VK_TC=1 TURBO_VK_SHADER_SKIP=values
run "tc -scores" TURBO_VK_TC=1 TURBO_VK_SHADER_SKIP=scores
run "tc -loads" TURBO_VK_TC=1 TURBO_VK_SHADER_SKIP=kloads,vloads
run "tc -scores -values" TURBO_VK_TC=1 TURBO_VK_SHADER_SKIP=scores,values
C="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 128K --tokens 1 --seqs 1 --warm-ms 100"
for tc in 0 1; do
  echo "== clock TURBO_VK_TC=$tc" >> "$F"
  TURBO_VK_TC=$tc TURBO_VK_CLOCK=1 timeout 60 $C 2>&1 | grep vkclock | tail -4 >> "$F"
done
cat "$F"
