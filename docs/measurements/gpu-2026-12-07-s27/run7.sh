#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27, seventh run: run6.sh's Vulkan fused step at 4K was 48.5 us a
# layer of wall time, of which 2.0 us in the calls and 34.8 us on the GPU:
# about 370 us a step elsewhere. The bench's Vulkan host with its phases
# traced (TKV_BENCH_TRACE=1: vkEndCommandBuffer, vkQueueSubmit, the wait),
# waiting as before (vkWaitForFences) and by polling the fence
# (TKV_BENCH_VK_WAIT=spin).
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
P="turbokv bench --backend vulkan --per-token --types turbo3 --ctx 4K,128K --layers 32 --warm-ms 300"
for w in block spin block spin; do
  (echo "== TKV_BENCH_TRACE=1 TKV_BENCH_VK_WAIT=$w $P"; TKV_BENCH_TRACE=1 TKV_BENCH_VK_WAIT=$w timeout 100 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token-$w.txt" 2>&1
  echo "== $w"; grep "^turbo" "$O/per-token-$w.txt" | tail -2
  grep "^vkh:" "$O/per-token-$w.txt" | tail -200 | awk '{e+=$3; s+=$5; w+=$7; n++} END {printf "vkh mean of %d: end %.1f submit %.1f wait %.1f us\n", n, e/n, s/n, w/n}'
done
