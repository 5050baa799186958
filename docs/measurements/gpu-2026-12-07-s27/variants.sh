#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27, second run: decode.comp's append variant took 255 registers
# (decode: 164 / 197 for turbo3 / turbo3o) in run.sh's plugin, and the
# fused step was slower than the two calls. Plugins built with step 0
# changed (build/muts/vX/turbokv-vulkan.so; README.md says how each was
# made): vB step 0 first in main (nothing live across it), the K and V rows
# by one loop not unrolled, the outlier flag only where K_SPLIT / V_SPLIT;
# vD as vB with the loop unrolled; vF as vB with the rotations from the
# specialization constants (Q_ROT, V_ROT); vE as vB with the encoder's sums
# in float (measurement only: not the reference's bytes). For each: the
# registers (TURBO_VK_PROFILE=1) and the per-token step; test_host_vulkan
# for vB and vF.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
for v in vB vF; do
  (echo "== $v test_host_vulkan"; TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/muts/$v timeout 100 build/tests/test_host_vulkan; echo "rc $? at ${SECONDS} s") > "$O/host-vulkan-$v.txt" 2>&1
  grep -E "^==|^\[ *(FAILED|PASSED|ERROR) |worst|rc " "$O/host-vulkan-$v.txt"
done
for v in vB vF vD vE; do
  export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/muts/$v
  (TURBO_VK_PROFILE=1 timeout 60 build/tools/turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K --layers 2; echo "rc $? at ${SECONDS} s") > "$O/profile-$v.txt" 2>&1
  echo "== $v"; grep "decode_append pipeline" "$O/profile-$v.txt" | sed 's/.*\(Register Count [0-9]*\).*\(Shared Memory Size [0-9]*\).*/\1 \2/'
  P="turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
  (echo "== $v $P"; timeout 120 build/tools/$P; echo "rc $? at ${SECONDS} s") > "$O/per-token-$v.txt" 2>&1
  grep "^turbo\|rc " "$O/per-token-$v.txt"
done
