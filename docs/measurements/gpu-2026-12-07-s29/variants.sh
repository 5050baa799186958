#!/bin/bash
# SPDX-License-Identifier: MIT
# On an NVIDIA machine (after . .gpurt/enter.sh): each Vulkan plugin that
# make-variants.sh left in .tc-variants/NAME checked with decode_tc taking
# the turbo3 calls (attention_agrees), then the turbo3 attention bench of
# every variant with TURBO_VK_TC=1 and of decode.comp, two rounds in turn.
# One output file, $OUT/variants.txt.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
F=$O/variants.txt
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> "$F"
vs=$(ls -d .tc-variants/*/ | sed 's|/$||')
for v in $vs; do
  echo "== $v: TURBO_VK_TC=1 TKV_TESTS=attention_agrees test_backends vulkan" >> "$F"
  TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/$v TURBO_VK_TC=1 TKV_TESTS=attention_agrees timeout 120 \
    build/tests/test_backends vulkan 2>&1 | grep -E "PASSED|FAILED|ERROR|worst|relative" >> "$F"
done
B="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300"
for r in 1 2; do
  echo "== decode.comp r$r" >> "$F"
  TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan TURBO_VK_TC=0 timeout 60 $B 2>&1 | grep -E "^turbo3|^type" | head -4 >> "$F"
  for v in $vs; do
    echo "== $v r$r" >> "$F"
    TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/$v TURBO_VK_TC=1 TURBO_VK_PROFILE=${PROFILE:-0} timeout 60 $B 2>&1 |
      grep -E "^turbo3|^type|decode_tc pipeline" | head -8 >> "$F"
  done
done
cat "$F"
