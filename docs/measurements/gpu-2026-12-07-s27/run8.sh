#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27, eighth run: what a queued attention's barrier after its
# inputs' vkCmdUpdateBuffer costs in the per-token step (run6/run7: the
# attention inside the step 33.5 us a layer against 27.7 alone at 4K).
# TURBO_VK_INPUT_BARRIER=0 leaves that barrier out (measurement only),
# alternating with the plugin as it is; the bench polls its fence.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan TKV_BENCH_VK_WAIT=spin
P="turbokv bench --backend vulkan --per-token --types turbo3 --ctx 4K,128K --layers 32 --warm-ms 300"
for b in 1 0 1 0; do
  (echo "== TURBO_VK_INPUT_BARRIER=$b $P"; TURBO_VK_INPUT_BARRIER=$b timeout 100 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token-barrier$b.txt" 2>&1
  echo "== barrier $b"; grep "^turbo" "$O/per-token-barrier$b.txt" | tail -2
done
