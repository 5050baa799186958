#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 28, second run (same warm H100 as run1): the per-token step of
# turbo3 and turbo3o, session 27's recording (TURBO_VK_INPUT_RING=0
# TURBO_VK_FUSED_STEP=noshift), the input ring alone, the ring and the
# shifted grid, twice in turn, the fence polled; then the plugin as it is
# with the blocking wait. All output in one file.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
P="turbokv bench --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300 --backend vulkan"
for i in 1 2; do
  for c in "0 noshift" "1 noshift" "1 1"; do
    set -- $c
    echo "== TKV_BENCH_VK_WAIT=spin TURBO_VK_INPUT_RING=$1 TURBO_VK_FUSED_STEP=$2 $P"
    TKV_BENCH_VK_WAIT=spin TURBO_VK_INPUT_RING=$1 TURBO_VK_FUSED_STEP=$2 timeout 60 build/tools/$P 2>&1 | grep -E "^turbo"
    echo "rc $? at ${SECONDS} s"
  done
done 2>&1 | tee "$O/ab.txt"
[ $SECONDS -gt 230 ] && exit 0
(echo "== $P"; timeout 60 build/tools/$P; echo "rc $? at ${SECONDS} s") 2>&1 | tee -a "$O/ab.txt"
