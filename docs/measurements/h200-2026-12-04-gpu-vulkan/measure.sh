#!/bin/bash
# SPDX-License-Identifier: MIT
# First device call (issue 11): where the Vulkan plugin's device time goes.
# Run from the copy of the worktree (.dev-vk) after `. .gpurt/enter.sh`,
# with drv/kvb built from kvb.c and main's plugin in old/; writes into $OUT:
# log.txt (kvb lines per variant), prof.txt (TURBO_VK_PROFILE lines: stage
# timestamps, memory types), clocks.txt (nvidia-smi every 250 ms).
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export KVB_APPEND=0
NEW=$R/build/plugins/cpu:$R/build/plugins/vulkan
OLD=$R/build/plugins/cpu:$R/old
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.sm,pstate --format=csv > "$O/log.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,pstate,utilization.gpu,power.draw --format=csv -lms 250 \
    > "$O/clocks.txt" 2>&1 &
SMI=$!
# run LABEL PLUGIN_PATH "ENV..." KVB-ARGS...
run() {
    local label=$1 path=$2 envs=$3
    shift 3
    echo "== $label: $envs drv/kvb vulkan $*" | tee -a "$O/log.txt" >> "$O/prof.txt"
    env TURBO_PLUGIN_PATH="$path" $envs timeout 40 drv/kvb vulkan "$@" 2>> "$O/prof.txt" | grep -v '^#' | tee -a "$O/log.txt"
}
C="${CTX:-4K,16K,128K}"
run base "$NEW" "TURBO_VK_PROFILE=1" turbo3,f16 $C 1x1,1x8 0 10
run old "$OLD" "" turbo3 $C 1x1 0 10
run nothing "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_SKIP=upload,prepare,attention,merge,download" turbo3 $C 1x1 0 10
run attention-only "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_SKIP=upload,prepare,merge,download" turbo3 $C 1x1 0 10
run empty-grid "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_SKIP=empty" turbo3 $C 1x1 0 10
run repeat20 "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_REPEAT=20" turbo3,f16 $C 1x1 0 10
run repeat20-empty "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_REPEAT=20 TURBO_VK_SKIP=empty,upload" turbo3 $C 1x1 0 10
for s in kloads,vloads scores,values kloads,scores,vloads,values; do
    run "shader-skip-$s" "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_SHADER_SKIP=$s" turbo3 $C 1x1 0 10
done
for w in 264 4224; do
    run "workgroups-$w" "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_WORKGROUPS=$w" turbo3 $C 1x1,1x8 0 10
done
run cache-host "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_CACHE_MEMORY=host" turbo3 ${CTX:-4K,16K} 1x1 0 10
run cache-bar "$NEW" "TURBO_VK_PROFILE=1 TURBO_VK_CACHE_MEMORY=bar" turbo3 ${CTX:-4K,16K} 1x1 0 10
kill $SMI
