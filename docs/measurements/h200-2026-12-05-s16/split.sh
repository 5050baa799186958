#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 16's second run: where turbo3o's registers (213 and 208 bytes of
# local memory, against 164 and none for turbo3) and its time come from in
# decode.comp, by leaving parts out (TURBO_VK_SHADER_SKIP, wrong results:
# koutliers / voutliers are the outliers of the keys / values alone), on
# the plugin of commit bfdf178's parent (.dev-old/, carried beside build/);
# and that plugin against the one with count_groups a loop of fixed length
# (.dev-cg/, commit bfdf178) and this tree's (the same, and the values'
# outliers walked by their owner lanes from per-lane row masks).
#   log.txt     the GPU, each step's start
#   conformance.txt  test_vulkan_ops' attention tests and test_backends'
#               split ones with this tree's plugin
#   regs.txt    the decode pipelines' statistics per variant
#   skip.txt    turbo3o (and turbo3) at 4K / 16K / 128K per variant, two
#               rounds; KVB_OUTLIER_CHANNELS=1: rows with fixed outlier
#               channels (one in 32, ten times larger), the owner masks'
#               worst case (one lane owns a channel of every row)
#   clocks.txt  SM / memory clock and power every 100 ms
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader >> "$O/log.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader -lms 100 > "$O/clocks.txt" 2>&1 &
smi=$!
POINTS=skip.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
OLD=TURBO_PLUGIN_PATH=$R/.dev-old:$B/plugins/cpu
CG=TURBO_PLUGIN_PATH=$R/.dev-cg:$B/plugins/cpu
NEW=TURBO_PLUGIN_PATH=$B/plugins/vulkan:$B/plugins/cpu
SKIPS=(none koutliers voutliers koutliers,voutliers scores values scores,values kloads,vloads)
step conformance
env $NEW timeout 120 $B/plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so "*attention*" > "$O/tmp.txt" 2>&1
echo "test_vulkan_ops rc $?" >> "$O/conformance.txt"
grep -E "PASSED|FAILED|ERROR" "$O/tmp.txt" | head -8 >> "$O/conformance.txt"
env $NEW TKV_TESTS=attention_agrees,split_attention_rotations timeout 200 $B/tests/test_backends vulkan > "$O/tmp.txt" 2>&1
echo "test_backends rc $?" >> "$O/conformance.txt"
grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
step regs
for s in "${SKIPS[@]}"; do
    echo "== old TURBO_VK_SHADER_SKIP=$s" >> "$O/regs.txt"
    env $OLD TURBO_VK_SHADER_SKIP=$s TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3o,turbo3 16K 1x1 0 2 2>&1 |
        grep "vkprof: pipeline attention" | sed 's/.*: decode pipeline (spec \([^)]*\)): /\1 | /' | cut -c1-300 >> "$O/regs.txt"
done
for env in "$CG" "$NEW"; do
echo "== $env" >> "$O/regs.txt"
env $env TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3o,turbo3 16K 1x1 0 2 2>&1 |
    grep "vkprof: pipeline attention" | sed 's/.*: decode pipeline (spec \([^)]*\)): /\1 | /' | cut -c1-300 >> "$O/regs.txt"
done
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step skip
for r in 1 2; do
    point $OLD -- turbo3o,turbo3 4K,16K,128K 1x1 0 4
    point $CG -- turbo3o,turbo3 4K,16K,128K 1x1 0 4
    point $NEW -- turbo3o,turbo3 4K,16K,128K 1x1 0 4
    point $NEW -- turbo3o 4K,128K 4x1,1x8 0 4
    point $OLD -- turbo3o 4K,128K 4x1,1x8 0 4
    for s in "${SKIPS[@]:1}"; do
        point $OLD TURBO_VK_SHADER_SKIP=$s -- turbo3o 4K,16K,128K 1x1 0 4
    done
    point $NEW TURBO_VK_DECODE_VROWS=2 -- turbo3o 4K,16K,128K 1x1 0 4
    point $OLD KVB_OUTLIER_CHANNELS=1 -- turbo3o 4K,16K,128K 1x1 0 4
    point $NEW KVB_OUTLIER_CHANNELS=1 -- turbo3o 4K,16K,128K 1x1 0 4
done
kill $smi
rm -f "$O/tmp.txt"
step done
