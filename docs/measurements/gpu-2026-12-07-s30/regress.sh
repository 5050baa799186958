#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 30, run 2: decode_tc measured 18% slower in run 1 than in
# session 29's run 2, and so was the commit before 2^pe: session 29's
# review changes are the suspects. Each variant (.tc-variants/next-*:
# unpack = the scales by unpackHalf2x16 again, unpack-tb = and an empty
# range's tile start as before, s29run2 = the plugin of 96058c6, what
# session 29 measured) checked on small_values_agree (subnormal scales)
# and timed with this tree's decode_tc, alternating, two rounds.
# One output file, $OUT/regress.txt. (Session 31's run kept the bench's
# last turbo3 line, its sparse-V point at 16K; now the device-time row.)
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
F=$O/regress.txt
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
vs=$(ls -d .tc-variants/next-*/ | sed 's|/$||')
for v in $vs; do
  echo "== $v: TURBO_VK_TC=1 attention_agrees,small_values_agree" >> "$F"
  TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 TKV_TESTS=attention_agrees,small_values_agree timeout 60 \
    build/tests/test_backends vulkan 2>&1 | grep -E "PASSED|FAILED|worst|relative" >> "$F"
done
B="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300"
for r in ${ROUNDS:-1 2}; do
  for v in build/plugins/vulkan $vs; do
    echo "== $v r$r" >> "$F"
    TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_TC=1 timeout 40 $B 2>&1 | grep -A2 "^device time" | grep "^turbo3" >> "$F"
  done
done
cat "$F"
