#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 15's second run: decode.comp adding the outliers of outlier-split
# values (turbo3o, what `auto` stores at head_dim 64-128) one row after
# another into per-subgroup sums in shared memory, instead of every lane
# comparing every row's outlier indices with its coordinates. The plugin
# before the change is in .dev-old/ (carried beside build/); alternating
# rounds in one run.
#   log.txt          the GPU, each step's start
#   conformance.txt  test_backends vulkan (attention tests) of the new build
#   ab.txt           old / new, turbo3o and turbo3 at 4K/16K/128K, 1 and 4
#                    query tokens, 8 sequences
#   regs.txt         the decode pipelines' statistics, old and new
#   clocks.txt       SM / memory clock and power every 100 ms
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
POINTS=ab.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
OLD=TURBO_PLUGIN_PATH=$R/.dev-old:$B/plugins/cpu
NEW=TURBO_PLUGIN_PATH=$B/plugins/vulkan:$B/plugins/cpu
step conformance
TKV_TESTS=attention_agrees,split_attention_rotations,paged_and_options_agree timeout 200 $B/tests/test_backends vulkan \
    > "$O/tmp.txt" 2>&1
echo "rc $?" >> "$O/conformance.txt"
grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step ab
for r in 1 2 3; do
    for env in "$OLD" "$NEW"; do
        point "$env" -- turbo3o,turbo3 4K,16K,128K 1x1 0 4
        point "$env" -- turbo3o 4K,128K 4x1,1x8 0 4
    done
done
step regs
for env in "$OLD" "$NEW"; do
    echo "== $env" >> "$O/regs.txt"
    env "$env" TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3o 16K 1x1,4x1 0 2 2>&1 |
        grep "vkprof: pipeline attention" | cut -c1-400 >> "$O/regs.txt"
done
kill $smi
rm -f "$O/tmp.txt"
step done
