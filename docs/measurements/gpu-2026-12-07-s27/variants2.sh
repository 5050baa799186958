#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27, third run: why variants.sh's append variant made turbo3o's
# step 1.3-1.5x slower than the two calls. vP1: vB with step 0 compiled out
# (its call under a specialization-constant condition that is false: the
# includes, shared arrays and extensions stay); vP2: vB with the encoder
# replaced by one byte store per row (wrong bytes: measurement only).
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
for v in; do
  (echo "== $v test_host_vulkan"; TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/muts/$v timeout 100 build/tests/test_host_vulkan; echo "rc $? at ${SECONDS} s") > "$O/host-vulkan-$v.txt" 2>&1
  grep -E "^==|^\[ *(FAILED|PASSED|ERROR) |worst|rc " "$O/host-vulkan-$v.txt"
done
for v in vP1 vP2; do
  export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/muts/$v
  (TURBO_VK_PROFILE=1 timeout 60 build/tools/turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K --layers 2; echo "rc $? at ${SECONDS} s") > "$O/profile-$v.txt" 2>&1
  echo "== $v"; grep "decode_append pipeline" "$O/profile-$v.txt" | sed 's/.*\(Register Count [0-9]*\).*\(Shared Memory Size [0-9]*\).*/\1 \2/'
  P="turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
  (echo "== $v $P"; timeout 120 build/tools/$P; echo "rc $? at ${SECONDS} s") > "$O/per-token-$v.txt" 2>&1
  grep "^turbo\|rc " "$O/per-token-$v.txt"
done
